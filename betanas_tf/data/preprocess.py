"""Image decoding and augmentation of the tfds and folder datasets (stateless: a function of
the example's seed), with the datasets' pixel statistics."""

import tensorflow as tf

IMAGENET_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
IMAGENET_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)
CIFAR_MEAN = (0.4914 * 255, 0.4822 * 255, 0.4465 * 255)
CIFAR_STD = (0.2470 * 255, 0.2435 * 255, 0.2616 * 255)


def _pixels(image):
  return tf.cast(tf.clip_by_value(tf.round(image), 0.0, 255.0), tf.uint8)


def _crop_window(shape, seed):
  """A random-resized-crop window (8-100 % of the area, aspect 3/4-4/3) of an image of
  `shape`, stateless in `seed`: (offset_y, offset_x, height, width)."""
  begin, crop_size, _ = tf.image.stateless_sample_distorted_bounding_box(
      shape, tf.zeros([1, 0, 4]), seed=seed, min_object_covered=0.0,
      aspect_ratio_range=(3 / 4, 4 / 3), area_range=(0.08, 1.0), max_attempts=10,
      use_image_if_no_bounding_boxes=True)
  return tf.stack([begin[0], begin[1], crop_size[0], crop_size[1]])


def _resize_and_flip(image, size: int, seed):
  image = tf.image.resize(image, (size, size))
  return tf.image.stateless_random_flip_left_right(
      image, tf.random.experimental.stateless_fold_in(seed, 1))


def _centre_crop(image, size: int):
  """Shorter side to size / 0.875, then the centre size x size."""
  shape = tf.cast(tf.shape(image)[:2], tf.float32)
  scale = (size / 0.875) / tf.reduce_min(shape)
  image = tf.image.resize(image, tf.cast(tf.round(shape * scale), tf.int32))
  return tf.image.resize_with_crop_or_pad(image, size, size)


def imagenet_preprocess(encoded, size: int, train: bool, seed):
  """JPEG bytes. Train: random-resized crop, cropped before decoding, + flip. Eval: shorter
  side to size/0.875, centre crop. Stateless in `seed`."""
  if train:
    window = _crop_window(tf.image.extract_jpeg_shape(encoded), seed)
    image = tf.image.decode_and_crop_jpeg(encoded, window, channels=3)
    return _pixels(_resize_and_flip(image, size, seed))
  return _pixels(_centre_crop(tf.io.decode_jpeg(encoded, channels=3), size))


def image_preprocess(encoded, size: int, train: bool, seed):
  """`imagenet_preprocess` for any image file TensorFlow decodes (JPEG, PNG, BMP, GIF's first
  frame): JPEGs are still cropped before decoding, the others decoded whole."""
  def other():
    image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    if train:
      window = _crop_window(tf.shape(image), seed)
      image = tf.image.crop_to_bounding_box(image, window[0], window[1], window[2], window[3])
      return _pixels(_resize_and_flip(image, size, seed))
    return _pixels(_centre_crop(image, size))
  return tf.cond(tf.io.is_jpeg(encoded), lambda: imagenet_preprocess(encoded, size, train, seed),
                 other)


def cifar_preprocess(encoded, size: int, train: bool, seed):
  """Train: pad 4, random crop, flip (stateless in `seed`)."""
  image = tf.cast(tf.io.decode_png(encoded, channels=3), tf.float32)
  if size != 32:
    image = tf.image.resize(image, (size, size))
  if train:
    image = tf.image.resize_with_crop_or_pad(image, size + 8, size + 8)
    image = tf.image.stateless_random_crop(image, (size, size, 3), seed)
    image = tf.image.stateless_random_flip_left_right(
        image, tf.random.experimental.stateless_fold_in(seed, 1))
  return _pixels(image)
