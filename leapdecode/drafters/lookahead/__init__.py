"""lookahead: Lookahead decoding (drafter.py), its Jacobi window (window.py) and n-gram pool (ngram_pool.py)."""
