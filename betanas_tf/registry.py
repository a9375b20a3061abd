"""A small name -> object registry shared by spaces, strategies and datasets.

Registering a name twice is an error, and a miss lists the valid names, so a
typo in a flag or a config fails with a message that says what would work.
"""

from typing import Callable, Dict, Generic, Iterator, TypeVar

T = TypeVar("T")


class UnknownNameError(KeyError):
  """A name that is not registered; the message lists the valid ones."""

  def __str__(self):  # KeyError would print the message quoted.
    return str(self.args[0])


class Registry(Generic[T]):
  """Maps names to objects of one kind (e.g. "search space")."""

  def __init__(self, kind: str):
    self._kind = kind
    self._entries: Dict[str, T] = {}

  def register(self, name: str, value: T) -> T:
    if not name or not isinstance(name, str):
      raise ValueError(f"{self._kind} name must be a non-empty string, got {name!r}")
    if name in self._entries:
      raise ValueError(f"{self._kind} {name!r} is already registered")
    self._entries[name] = value
    return value

  def unregister(self, name: str) -> T:
    """Removes `name` (e.g. an op or strategy a test or a plugin added) and returns it."""
    if name not in self._entries:
      raise UnknownNameError(f"unknown {self._kind} {name!r}; valid names: {', '.join(self.names())}")
    return self._entries.pop(name)

  def decorator(self, name: str) -> Callable[[T], T]:
    """Registers the decorated object under `name` and returns it unchanged."""
    return lambda value: self.register(name, value)

  def get(self, name: str) -> T:
    try:
      return self._entries[name]
    except KeyError:
      raise UnknownNameError(
          f"unknown {self._kind} {name!r}; valid names: {', '.join(self.names())}"
      ) from None

  def names(self):
    return sorted(self._entries)

  def __contains__(self, name: str) -> bool:
    return name in self._entries

  def __iter__(self) -> Iterator[str]:
    return iter(self.names())
