"""Learned generators used as sources of synthetic training pairs (built from MONAI's generative networks).

``pix2pix``: a conditional label-to-image GAN (U-Net generator, PatchGAN discriminator) and ``compose``: new label
maps made from real ones (deformation, flips, pasted structures) for it to render (method ``gan_synth``);
``labelgen``: a label-map generator (autoencoder + latent diffusion) and ``spade``: a SPADE image generator with a
style encoder (brainSPADE; method ``spade`` and the ``labelgen:RUN`` label source).
"""
