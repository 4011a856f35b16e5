"""Models of both streams."""
from .resnet import (ARCHS, IMAGENET_WEIGHTS, Classifier, FrozenStatsBatchNorm2d, build_model, cross_modality_conv1,
                     ensure_pretrained, freeze_partial_bn, imagenet_state_dict, load_torch_file, normalize_keys,
                     pretrained_name)
from .param_groups import LR_GROUPS, base_lr, parameter_groups

__all__ = ["ARCHS", "IMAGENET_WEIGHTS", "Classifier", "FrozenStatsBatchNorm2d", "build_model", "cross_modality_conv1",
           "ensure_pretrained", "freeze_partial_bn", "imagenet_state_dict", "load_torch_file", "normalize_keys", "pretrained_name",
           "LR_GROUPS", "base_lr", "parameter_groups"]
