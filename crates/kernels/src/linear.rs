//! Fully-connected layer (torch.nn.Linear): y = x W^T + b, W shaped [out, in].
