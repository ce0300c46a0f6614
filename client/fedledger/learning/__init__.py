"""The torch side: model architectures (described as data), local training, data sets and splits, differential privacy, and attacks for experiments."""
