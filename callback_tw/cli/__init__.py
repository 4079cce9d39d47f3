"""
Console scripts, plain programs beside the server: callback-client (an AS from
the shell) and callback-cdr (call records from the store).
"""
