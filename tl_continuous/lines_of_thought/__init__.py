"""Lines of thought: residual-stream trajectories of the last token through the layers."""
