"""Execution of parallel plans on torch.distributed: the launcher and each rank's runtime."""
