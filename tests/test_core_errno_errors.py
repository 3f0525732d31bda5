"""The errno errors plugins share from mmu_notifier.errors (EPERM, EACCES, ESRCH), one class each."""

from __future__ import annotations

import errno

import pytest

from mmu_notifier import errors


@pytest.mark.parametrize(("cls", "code"), [(errors.PermissionDeniedError, errno.EPERM),
                                           (errors.AccessDeniedError, errno.EACCES),
                                           (errors.NoSuchProcessError, errno.ESRCH)])
def test_each_is_a_kernel_error_returning_its_errno(cls: type[errors.KernelError], code: int) -> None:
    assert issubclass(cls, errors.KernelError)
    assert cls("x").kernel_return == -code


def test_the_plugins_raise_the_cores_classes_under_their_old_names() -> None:
    from mmu_notifier_amdkfd import lifetime
    from mmu_notifier_hmm import PermissionDeniedError as HmmEperm
    from mmu_notifier_radeon import device

    assert HmmEperm is device.PermissionDeniedError is errors.PermissionDeniedError
    assert device.AccessDeniedError is errors.AccessDeniedError
    assert device.NoProcessError is lifetime.NoSuchProcessError is errors.NoSuchProcessError
