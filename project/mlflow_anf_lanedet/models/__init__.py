"""SCNN lane-detection model: torchvision-compatible backbones, fast message passing, loss and LR schedule."""

from .backbones import Backbone, PretrainedError, PretrainedReport, ResNet, VGG16BN, load_pretrained
from .loss import SCNNLoss
from .schedule import PolyLRLambda, poly_lr_lambda
from .scnn import SCNN, MessagePassing, ModelConfig, build_model, message_passing_reference

__all__ = [
    "SCNN",
    "Backbone",
    "MessagePassing",
    "ModelConfig",
    "PolyLRLambda",
    "PretrainedError",
    "PretrainedReport",
    "ResNet",
    "SCNNLoss",
    "VGG16BN",
    "build_model",
    "load_pretrained",
    "message_passing_reference",
    "poly_lr_lambda",
]
