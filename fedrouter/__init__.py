"""fedrouter: task-centric personalized federated fine-tuning of language models on Flower."""

__version__ = "0.1.0"
