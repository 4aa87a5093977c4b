"""Networks: the exact UNet of the originals (``models.unet``), projection heads (``models.heads``),
weight transfer between stages (``models.transfer``) and loading trained weights (``models.io``)."""
