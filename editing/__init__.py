"""Latent-space editing: InterFaceGAN, GANSpace, SeFa directions applied to inversions."""
