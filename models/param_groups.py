"""The optimizer's parameter groups: one for everything, or TSN's learning-rate policy.

tsn-pytorch (``models.py`` TSN.get_optim_policies, applied in ``main.py`` adjust_learning_rate
as ``lr * lr_mult`` and ``weight_decay * decay_mult``) trains five groups:

| group             | lr x (RGB / flow) | weight decay |
| ---               | ---               | ---          |
| first conv weight | 1 / 5             | yes          |
| first conv bias   | 2 / 10            | no           |
| other weights     | 1                 | yes          |
| other biases      | 2                 | no           |
| BatchNorm         | 1                 | no           |

Conv and linear layers are "weights" and "biases"; under partial BN the frozen BatchNorms
are in no group (TSN leaves every BatchNorm but the first out).
"""
from __future__ import annotations

from torch import nn

LR_GROUPS = ("single", "tsn")


def parameter_groups(model: nn.Module, policy: str, lr: float, weight_decay: float, flow: bool) -> list[dict]:
    """Groups for ``torch.optim.SGD``: each with its ``lr``, ``weight_decay``, and (tsn) its
    ``name``, ``lr_mult`` and ``decay_mult``, so that a schedule or a resume can rescale them."""
    if policy == "single":
        return [{"params": list(model.parameters())}]
    if policy != "tsn":
        raise ValueError(f"lr groups must be one of {LR_GROUPS}, got {policy!r}")
    first_weight, first_bias, weights, biases, norms = [], [], [], [], []
    convs = 0
    for module in model.modules():
        if isinstance(module, (nn.Conv1d, nn.Conv2d)):
            convs += 1
            weight_list, bias_list = (first_weight, first_bias) if convs == 1 else (weights, biases)
        elif isinstance(module, nn.Linear):
            weight_list, bias_list = weights, biases
        elif isinstance(module, nn.modules.batchnorm._BatchNorm):
            norms.extend(p for p in module.parameters(recurse=False) if p.requires_grad)
            continue
        else:
            continue
        weight_list.append(module.weight)
        if module.bias is not None:
            bias_list.append(module.bias)
    groups = [("first_conv_weight", first_weight, 5.0 if flow else 1.0, 1.0),
              ("first_conv_bias", first_bias, 10.0 if flow else 2.0, 0.0),
              ("normal_weight", weights, 1.0, 1.0),
              ("normal_bias", biases, 2.0, 0.0),
              ("bn", norms, 1.0, 0.0)]
    grouped = {id(p) for _, params, _, _ in groups for p in params}
    for name, module in model.named_modules():
        if any(p.requires_grad and id(p) not in grouped for p in module.parameters(recurse=False)):
            raise ValueError(f"no TSN learning-rate group for the parameters of {name or 'the model'} "
                             f"({type(module).__name__}); use --lr-groups single")
    return [{"params": params, "name": name, "lr_mult": lr_mult, "decay_mult": decay_mult, "lr": lr * lr_mult,
             "weight_decay": weight_decay * decay_mult}
            for name, params, lr_mult, decay_mult in groups if params]


def base_lr(optimizer) -> float:
    """The rate of a multiplier-1 parameter: what --lr sets and the schedule moves."""
    group = optimizer.param_groups[0]
    return group["lr"] / group.get("lr_mult", 1.0)
