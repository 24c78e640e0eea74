"""`mnemo report`: figures and tables of the paper (Figure 4, Tables 1-2, Figures 1/5) and throughput
charts, made from run directories. Reads RUN/config.yaml, metrics.json, events.jsonl and the sealed
phases; never writes into a run directory except where `--out` points."""
