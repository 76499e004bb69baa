"""tinygan.nn: layers with hand-written forward and backward passes."""

from tinygan.nn.activations import LeakyReLU, ReLU, Sigmoid, Tanh
from tinygan.nn.conv import Conv2d, ConvTranspose2d
from tinygan.nn.dense import Dense
from tinygan.nn.misc import Dropout, Embedding, Flatten, Reshape
from tinygan.nn.module import Module, Sequential, frozen, no_input_grad
from tinygan.nn.norm import BatchNorm1d, BatchNorm2d

__all__ = [
    "BatchNorm1d", "BatchNorm2d", "Conv2d", "ConvTranspose2d", "Dense", "Dropout",
    "Embedding", "Flatten", "LeakyReLU", "Module", "ReLU", "Reshape", "Sequential",
    "Sigmoid", "Tanh", "frozen", "no_input_grad",
]
