"""Analysis of finished runs: tables over run directories and seeds, the rule that picks a validation search's
winner, paired differences between methods, what exemplars teach and how far adjusted ones drift. Tools that
read run directories and print; the profilers that time code are in benchmarks/."""
