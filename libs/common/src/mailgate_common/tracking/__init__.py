"""Open and click tracking and list unsubscribe links.

``tokens``: the signed data every tracking and unsubscribe URL carries (HMAC with
a key id, so a rotated secret keeps delivered mail working).  ``rewrite``: the
sender puts the pixel and the click links into a message's html at send time,
so stored bodies stay as submitted.  ``machine``: tells opens and clicks no
person made (Apple Mail Privacy Protection, link scanners, HEAD, prefetch).
"""
