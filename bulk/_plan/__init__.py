"""Planning (private): sweep sources and their expansion, and the pass that checks every row
before a run."""
