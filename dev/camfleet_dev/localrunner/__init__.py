"""Local pod runner: a kubelet stand-in for dev and tests (no kubelet runs here)."""
