"""ELMo as a unit of a sweep: a pre-trained biLM cell trained as a feature extractor (or fine-tuned) on a task."""
