"""NeuralLog tenant operator."""
