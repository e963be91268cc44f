"""GPT-2/3-style evaluation without parameter updates: prompts with k demonstrations, LM scoring, greedy answers."""
