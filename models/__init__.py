"""Models of both streams."""
from .resnet import (ARCHS, Classifier, build_model, cross_modality_conv1, imagenet_state_dict, load_torch_file,
                     normalize_keys)

__all__ = ["ARCHS", "Classifier", "build_model", "cross_modality_conv1", "imagenet_state_dict", "load_torch_file",
           "normalize_keys"]
