"""Networks: the exact UNet of the originals (``models.unet``), projection heads (``models.heads``)
and weight transfer between stages (``models.transfer``). Trained weights are loaded by ``workdir``."""
