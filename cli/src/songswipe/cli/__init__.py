"""The songswipe operator command line."""
