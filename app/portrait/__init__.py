"""The Portrait workspace: 3D heads sampled, orbited, filmed, and the portrait engines' panels."""
