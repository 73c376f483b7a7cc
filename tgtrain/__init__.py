"""tgtrain: a streaming semi-supervised trainer for action recognition with temporal gradients."""
