"""Open and click tracking: the pixel (/open.gif) and the click redirect (/redirect)."""
