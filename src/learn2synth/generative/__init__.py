"""Learned generators used as sources of synthetic training pairs (built from MONAI's networks).

``pix2pix``: a conditional label-to-image GAN (U-Net generator, PatchGAN discriminator); ``compose``: new label
maps made from real ones (deformation, flips, pasted structures) for the generator to render.
"""
