"""Baseline parity: mnemo's strategies beside the reference implementations (FACIL, PyCIL) on the same data
and a recipe matched between them (docs/parity.md). The peers are public repositories the user checks out; they
are imported from that checkout at run time and never copied here. Not in the product's code path; CI runs
only the parts that need no peer."""
