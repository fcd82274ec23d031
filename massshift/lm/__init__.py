"""Language models: loading checkpoints, prompts and prefill, log-probabilities, sampling, runtime."""
