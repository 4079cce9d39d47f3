"""Console scripts: callback-client (an AS from the shell) and callback-cdr."""
