"""Presentation: the plots, PNGs and HTML page that verify, tune and inspect draw (matplotlib), above io and below
the use cases that write them."""
