"""
Console scripts (plain blocking programs, not the server).
"""
