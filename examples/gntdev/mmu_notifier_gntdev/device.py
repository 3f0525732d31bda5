"""The device side of gntdev: grant maps and the grant pages the hypervisor maps into them.

The "device translation" of a grant page is the hypervisor's record of where
the grant is mapped; the model represents it as the frame the CPU page table
holds at that virtual page when the grant is mapped there. A record that
survives an invalidation of its page is the stale mapping the notifier exists
to prevent.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(eq=False)
class GrantMap:
    """``struct gntdev_grant_map``: grants mmapped at ``[start, end)`` of the file's mm.

    ``pages`` holds the grant pages mapped now: virtual page number -> frame.
    """

    start: int
    end: int
    page_shift: int
    pages: dict[int, int] = field(default_factory=dict)

    def overlaps(self, start: int, end: int) -> bool:
        """The kernel's ``in_range``: the map intersects ``[start, end)``."""
        return self.start < end and start < self.end
