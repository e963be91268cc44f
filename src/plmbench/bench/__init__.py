"""`make bench`: training-step throughput and memory of plmbench's models against Hugging Face's, the machine's
measured matmul peak (for a CPU "MFU"), data-pipeline throughput, and the share of run time outside steps."""
