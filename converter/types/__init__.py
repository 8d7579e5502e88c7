"""The Caffe layer types, one module per family: each registers, with :func:`caffe2keras.spec.register`,
every type's top-shape function, learned blobs and translator side by side."""
