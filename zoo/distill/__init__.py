"""Knowledge distillation into any timm/zoo student from any timm/zoo teacher.

- `OFA` (OFA-KD, NeurIPS 2023): exit branches per student stage, the OFA loss in logit space;
  works across CNN / ViT / MLP families.
- `KD`, `DKD`, `Vanilla`: logit baselines (Hinton KD, decoupled KD) and no distillation.
- `load_teacher`: a teacher by timm name from a local checkpoint, frozen.
- `ofa_loss`, `kd_loss`, `dkd_loss`: the losses, equal to the official OFAKD functions.

```python
student = timm.create_model("inceptionnext_atto", num_classes=100)
teacher = zoo.distill.load_teacher("deit_tiny_patch16_224", "deit_t_c100.pth", num_classes=100)
ofa = zoo.distill.OFA(student, teacher, num_classes=100)
logits, losses = ofa(images, labels); sum(losses.values()).backward()
torch.save(ofa.student_state_dict(), "student.pth")       # the bare student
```
"""

from .distillers import DKD, KD, Distiller, Vanilla
from .losses import dkd_loss, kd_loss, ofa_loss, one_hot_target, target_cross_entropy
from .ofa import OFA
from .stages import resolve_stages
from .teacher import freeze_teacher, load_teacher, teacher_state_dict

# `DistillationTask(distiller=...)` names
DISTILLERS: dict[str, type[Distiller]] = {"ofa": OFA, "kd": KD, "dkd": DKD, "none": Vanilla}

__all__ = [
    "DISTILLERS",
    "DKD",
    "KD",
    "OFA",
    "Distiller",
    "Vanilla",
    "dkd_loss",
    "freeze_teacher",
    "kd_loss",
    "load_teacher",
    "ofa_loss",
    "one_hot_target",
    "resolve_stages",
    "target_cross_entropy",
    "teacher_state_dict",
]
