"""Earthdata mode rehearsed offline: stand-ins for NASA's and AWS's services on 127.0.0.1 (see test_rehearsal.py)."""
