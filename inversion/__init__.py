"""Everything from a photo to StyleGAN2 W+ codes and a generator."""
