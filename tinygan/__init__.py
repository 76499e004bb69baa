"""tinygan: Generative Adversarial Networks with hand-written backpropagation."""

__version__ = "0.1.0"
