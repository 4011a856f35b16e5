"""Models of both streams."""
from .resnet import (ARCHS, IMAGENET_WEIGHTS, Classifier, build_model, cross_modality_conv1, imagenet_state_dict,
                     load_torch_file, normalize_keys, pretrained_name)

__all__ = ["ARCHS", "IMAGENET_WEIGHTS", "Classifier", "build_model", "cross_modality_conv1", "imagenet_state_dict",
           "load_torch_file", "normalize_keys", "pretrained_name"]
