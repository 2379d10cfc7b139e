"""torch.optim-compatible optimizers running on the nesterov engine."""
