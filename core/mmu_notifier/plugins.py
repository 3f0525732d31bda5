"""Driver discovery, validation and the resolved ops table.

Models module loading: a driver plugin is found through the entry-point group
``mmu_notifier.drivers``, its config is validated, its hooks are checked, and
its callbacks are resolved **once** into an :class:`MMUNotifierOps` (the model
of ``struct mmu_notifier_ops``). The ops object is the identity key of the
get/put scheme: one subscription per (ops, mm).

Dispatch calls an ops field directly. With no wrapper plugin installed that
field is the driver's own bound method (or a tiny argument adapter), so the
cost of a callback does not grow with the number of installed drivers. When a
wrapper is registered, every driver is re-resolved so that its fields go
through the wrappers around that driver's implementation only. New-style
wrappers (``@hookimpl(wrapper=True)``, what tracers and the invariants
recorder use) are resolved once too, into a direct chain that runs each
generator as pluggy's ``_multicall`` would (outermost = last registered;
exceptions thrown into the generators innermost first), so a traced callback
costs the wrappers themselves, not a keyword-argument hook call per callback.
Only an old-style ``hookwrapper`` still goes through pluggy's subset caller.

A plugin that wants to count and isolate every driver's invalidation callbacks
does not need a wrapper on them at all: the *dispatch observer* protocol
(:data:`DISPATCH_OBSERVED`, :class:`CallbackCounts`, ``dispatch_counts`` and
``callback_fault``, see :meth:`DriverRegistry.add_plugin`) makes the core's list
walks count each driver's calls and route a driver's exception to the
observer, with no Python call between the walk and the driver's function.
"""

from __future__ import annotations

import functools
import sys
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import pluggy

from mmu_notifier import hookspecs
from mmu_notifier.errors import (
    ConfigError,
    KernelError,
    MisuseError,
    PluginError,
    PluginWarning,
    UseAfterFreeError,
)
from mmu_notifier.range import Event

if TYPE_CHECKING:
    import importlib.metadata

    from mmu_notifier.config import DriverConfig
    from mmu_notifier.kernel import Kernel

# pydantic (through mmu_notifier.config) and importlib.metadata are imported where a config is
# validated or an entry point read, not with this module: a scenario's driver that never reads its
# config, and a process that loads no entry point (``explore`` of a built-in scenario), skip both.

ENTRY_POINT_GROUP = "mmu_notifier.drivers"
#: every hook a driver may implement (the functions of :mod:`mmu_notifier.hookspecs` marked as specs)
HOOK_NAMES = frozenset(
    name for name, value in vars(hookspecs).items() if hasattr(value, f"{hookspecs.PROJECT}_spec")
)


class _DefaultConfigModel:
    """``Driver.config_model`` of a driver that sets none: :class:`~mmu_notifier.config.DriverConfig`.

    Read through this descriptor so that pydantic is imported when a config model is first
    needed, not with the plugin machinery.
    """

    def __get__(self, instance: object, owner: type | None = None) -> type[DriverConfig]:
        from mmu_notifier.config import DriverConfig

        return DriverConfig


class Driver:
    """Base class for driver plugins (optional, but it gives the metadata the core reads).

    A subclass sets ``name`` and ``version``, may set ``config_model`` and
    ``required_hooks``, and implements hooks from :mod:`mmu_notifier.hookspecs`
    as methods marked ``@hookimpl``. The entry point names the class; the core
    instantiates it with the validated config.
    """

    name: ClassVar[str] = ""
    version: ClassVar[str] = "0"
    config_model: ClassVar[type[DriverConfig]] = _DefaultConfigModel()  # type: ignore[assignment]
    #: hooks the driver cannot work without; a driver lacking one is not loaded
    required_hooks: ClassVar[tuple[str, ...]] = ("alloc_notifier", "free_notifier")
    #: what the conformance kit may expect of it (see ``mmu_notifier.exerciser``)
    capabilities: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, config: DriverConfig | None = None) -> None:
        if config is not None:
            self.config = config

    @functools.cached_property
    def config(self) -> DriverConfig:
        """The validated config; without one given, ``config_model()``'s defaults, made on first read."""
        return self.config_model()

    def __repr__(self) -> str:
        return f"<driver {self.name} {self.version}>"

    def null_callbacks(self) -> frozenset[str]:
        """Callbacks this build leaves NULL in its ``struct mmu_notifier_ops``, though the class implements them.

        A driver modelling several kernels (its ``scheme``) implements every
        callback any of them fills, and names here the ones the chosen kernel
        does not have: gru 5.3 has ``release`` but no ``alloc_notifier``/
        ``free_notifier``, 5.4 the reverse. The core reads this once, when the
        driver is added, and leaves those fields ``None`` in the ops, exactly as
        a NULL member: dispatch skips them, ``get`` refuses a driver without
        ``alloc_notifier``. Decide it from the config in ``__init__``; the
        default is none.
        """
        return frozenset()


Callback = Callable[..., Any]

#: the callbacks the core's list walks count and isolate themselves for a dispatch observer (the hot,
#: per-subscription ones: ``mn_hlist_invalidate_range_start`` and ``mn_hlist_invalidate_end``)
DISPATCH_OBSERVED = frozenset({"invalidate_range_start", "invalidate_range_end", "invalidate_range"})


class CallbackCounts:
    """What the core's list walks did with one driver's :data:`DISPATCH_OBSERVED` callbacks.

    Not a kernel structure: the model's accounting for observers (a tracer),
    kept by dispatch itself so that counting a callback costs no wrapper call.
    The core counts only while a dispatch observer is registered (see
    :meth:`DriverRegistry.add_plugin`); an observer reads the numbers whenever it
    likes and keeps its own baseline if it joins late.

    * ``calls``: the observed callbacks the walks began (a call still running
      counts, and so does one that raised);
    * ``starts``: ``invalidate_range_start`` calls that returned (or whose
      exception was the driver's fault, routed to ``callback_fault``), by
      :class:`~mmu_notifier.range.Event` value;
    * ``refusals``: the starts among those that returned ``-EAGAIN``.

    When they land: on the deterministic backend (the explorer, the main job's
    default mode) each call is counted as it happens, as a wrapper would; on
    real threads, where a walk has no scheduling points, a walk's calls are
    counted together when the walk ends (or stops on an exception), so a reader
    on another thread sees a walk's calls at once rather than one by one.
    """

    __slots__ = ("calls", "starts", "refusals")

    def __init__(self) -> None:
        self.calls = 0
        self.starts = [0] * len(Event)
        self.refusals = 0

    def __repr__(self) -> str:
        return f"<CallbackCounts calls={self.calls} starts={self.starts} refusals={self.refusals}>"


class MMUNotifierOps:
    """One driver's resolved callbacks (``struct mmu_notifier_ops``); ``None`` where absent.

    ``invalidate`` is the interval notifiers' callback (5.5's
    ``struct mmu_interval_notifier_ops``), resolved the same way.
    """

    __slots__ = (
        "driver",
        "exerciser",
        "name",
        "version",
        "linked",
        "pending_frees",
        "unloaded_at",
        "counts",
        "isolated",
        *hookspecs.CALLBACKS,
    )

    release: Callback | None
    clear_flush_young: Callback | None
    clear_young: Callback | None
    test_young: Callback | None
    change_pte: Callback | None
    invalidate_range_start: Callback | None
    invalidate_range_end: Callback | None
    invalidate_range: Callback | None
    alloc_notifier: Callback | None
    free_notifier: Callback | None
    invalidate: Callback | None
    exerciser: Callback | None

    def __init__(self, name: str, driver: object) -> None:
        self.name = name
        self.driver = driver
        self.version = str(getattr(driver, "version", "0"))
        self.exerciser = None
        #: subscriptions with these ops linked on some mm (kept by the container's link/unlink)
        self.linked = 0
        #: frees deferred by a last ``put`` that have not run yet
        self.pending_frees = 0
        #: where :meth:`DriverRegistry.unload` unloaded the module, or None while it is loaded
        self.unloaded_at: str | None = None
        #: the dispatch counts handed to dispatch observers (the core counts into them while one is registered)
        self.counts = CallbackCounts()
        #: the :data:`DISPATCH_OBSERVED` callbacks whose field already isolates the driver's exception inside
        #: (the field has wrappers around the driver's function); dispatch isolates the others itself
        self.isolated: frozenset[str] = frozenset()
        for callback in hookspecs.CALLBACKS:
            setattr(self, callback, None)

    def __repr__(self) -> str:
        state = " (unloaded)" if self.unloaded_at else ""
        return f"<MMUNotifierOps {self.name}{state}>"


@dataclass
class LoadReport:
    """What :meth:`DriverRegistry.load_entry_points` did: loaded drivers and failures by name."""

    loaded: dict[str, MMUNotifierOps] = field(default_factory=dict)
    failed: dict[str, Exception] = field(default_factory=dict)


def _null_callbacks(driver: object, name: str) -> frozenset[str]:
    """``driver.null_callbacks()`` checked: callback names only (a plugin fault is a :class:`PluginError`)."""
    method = getattr(driver, "null_callbacks", None)
    if method is None:
        return frozenset()
    try:
        null = frozenset(method())
    except Exception as error:
        raise PluginError(name, f"null_callbacks() failed: {type(error).__name__}: {error}") from error
    unknown = sorted(null - set(hookspecs.CALLBACKS))
    if unknown:
        raise PluginError(name, f"null_callbacks() names {unknown}, which are not mmu_notifier_ops callbacks")
    return null


def _adapter(function: Callback, spec_args: tuple[str, ...], impl_args: tuple[str, ...]) -> Callback:
    """Call ``function`` positionally with the spec arguments it declares."""
    if impl_args == spec_args:
        return function
    positions = tuple(spec_args.index(name) for name in impl_args)

    def adapted(*args: Any) -> Any:
        return function(*(args[i] for i in positions))

    adapted.__wrapped__ = function  # type: ignore[attr-defined]  # what it calls (functools' convention)
    return adapted


def _wrapped(inner: Callback, wrappers: list[tuple[Callback, tuple[int, ...] | None]], name: str) -> Callback:
    """``inner`` inside new-style generator ``wrappers`` (outermost first), as pluggy runs them.

    Each wrapper is called with the spec arguments it declares (``None``: all of
    them, in order), runs to its ``yield``, gets the inner result sent in (or the
    inner exception thrown in), and its return value (or exception) is what the
    next outer wrapper sees.
    """

    def call(*args: Any) -> Any:
        gens: list[Any] = []
        result: Any = None
        failure: BaseException | None = None
        try:
            for function, positions in wrappers:
                gen = function(*args) if positions is None else function(*[args[i] for i in positions])
                try:
                    next(gen)
                except StopIteration:
                    raise RuntimeError(f"wrapper {function!r} of {name} did not yield") from None
                gens.append(gen)
            result = inner(*args)
        except BaseException as error:
            failure = error
        for gen in reversed(gens):
            try:
                if failure is not None:
                    gen.throw(failure)
                else:
                    gen.send(result)
                gen.close()
            except StopIteration as stop:
                result, failure = stop.value, None
                continue
            except BaseException as error:
                failure = error
                continue
            failure = RuntimeError(f"wrapper of {name} has a second yield")
        if failure is not None:
            raise failure
        return result

    return call


class DriverRegistry:
    """The drivers loaded into one :class:`~mmu_notifier.kernel.Kernel`, and its pluggy manager."""

    def __init__(self, kernel: Kernel) -> None:
        self.kernel = kernel
        self._pm: pluggy.PluginManager | None = None
        self._ops: dict[int, MMUNotifierOps] = {}
        self._by_name: dict[str, MMUNotifierOps] = {}
        #: non-driver plugins with a ``wrap_callback`` method, in registration order
        self._callback_wrappers: list[Any] = []
        #: dispatch observers: plugins with ``dispatch_counts`` and those with ``callback_fault``
        self._counters: list[Any] = []
        self._fault_handlers: list[Any] = []
        #: a dispatch observer is registered: the list walks count and isolate (read once per walk)
        self.observed = False
        #: bumped by every resolution of the ops (a walk's cached census is of one generation)
        self.generation = 0

    @property
    def pm(self) -> pluggy.PluginManager:
        """The pluggy manager, made on first use (a kernel that loads no driver never pays for it)."""
        if self._pm is None:
            self._pm = pluggy.PluginManager(hookspecs.PROJECT)
            self._pm.add_hookspecs(hookspecs)
        return self._pm

    # -- adding -----------------------------------------------------------
    def add(self, driver: object, name: str | None = None) -> MMUNotifierOps:
        """Load a driver object; returns its ops. Raises :class:`PluginError` and registers nothing on a bad driver."""
        name = name or str(getattr(driver, "name", "") or type(driver).__name__)
        if name in self._by_name:
            raise PluginError(name, "a driver of that name is already loaded")
        for hook in unmarked_hooks(driver):
            warnings.warn(PluginWarning(
                f"driver {name!r}: the method {hook} has a hook's name but no @hookimpl marker, so the core never "
                f"calls it; mark it @mmu_notifier.hookimpl or rename it (see docs/plugin-guide.md#hook-{hook})"
            ), stacklevel=2)
        try:
            self.pm.register(driver, name=name)
        except (pluggy.PluginValidationError, ValueError, TypeError) as error:
            raise PluginError(name, f"bad hook: {error}") from error
        try:
            self._check_hooks(driver, name)
        except PluginError:
            self.pm.unregister(driver)
            raise
        ops = MMUNotifierOps(name, driver)
        self._ops[id(driver)] = ops
        self._by_name[name] = ops
        self._resolve_all()
        return ops

    def add_plugin(self, plugin: object, name: str | None = None) -> None:
        """Register a non-driver plugin (a tracer, a fault injector); its wrappers apply to every driver.

        Besides pluggy wrappers (``@hookimpl(wrapper=True)``), a plugin may offer a plain method
        ``wrap_callback(driver: str, callback: str, function) -> function``: it is called once per
        driver and callback when the ops are resolved, with the driver's own implementation, and what it
        returns is called instead (innermost, inside any pluggy wrapper). A closure around the driver's
        function costs one extra call per callback, where a generator wrapper costs a generator.

        A plugin may also be a *dispatch observer*, for the hot per-subscription callbacks
        (:data:`DISPATCH_OBSERVED`: a list walk calls them once per subscription, where even a closure
        costs more than the call itself):

        * ``dispatch_counts(driver: str, counts: CallbackCounts) -> None`` is called whenever the ops are
          resolved, with the object the core counts that driver's observed callbacks into
          (:class:`CallbackCounts`; the same object for the driver's whole time loaded). While any
          plugin offering it is registered, the walks count.
        * ``callback_fault(driver: str, callback: str, error: Exception) -> None``: while any plugin
          offering it is registered, an observed callback that raises an ``Exception`` other than a
          :class:`~mmu_notifier.errors.KernelError` (an errno for the caller) is that driver's fault:
          every such plugin is told, and dispatch carries on as if the callback had returned nothing
          (a kernel oops in a module is that module's bug; here the run goes on). Anything wrapping
          the driver's function (a ``wrap_callback`` closure of another plugin, a pluggy wrapper) sees
          that ``None`` too: the registry then isolates innermost, around the driver's own function.

        An observer's own ``wrap_callback`` should return the observed callbacks unchanged, or the
        walk's cost is back. The watchdog of the main job finds a callback in flight by sampling
        thread and greenlet frames (see :mod:`mmu_notifier.workload.stats`), not by a wrapper.
        """
        try:
            self.pm.register(plugin, name=name)
        except (pluggy.PluginValidationError, ValueError) as error:
            raise PluginError(name or type(plugin).__name__, f"bad hook: {error}") from error
        if callable(getattr(plugin, "wrap_callback", None)):
            self._callback_wrappers.append(plugin)
        if callable(getattr(plugin, "dispatch_counts", None)):
            self._counters.append(plugin)
        if callable(getattr(plugin, "callback_fault", None)):
            self._fault_handlers.append(plugin)
        self._resolve_all()

    def remove_plugin(self, plugin: object) -> None:
        """Unregister a non-driver plugin added with :meth:`add_plugin`."""
        self.pm.unregister(plugin)
        for registered in (self._callback_wrappers, self._counters, self._fault_handlers):
            if plugin in registered:
                registered.remove(plugin)
        self._resolve_all()

    def isolate(self, ops: MMUNotifierOps, callback: str, error: BaseException) -> bool:
        """A dispatch walk caught ``error`` from ``ops``' ``callback``: True if it was the driver's fault and the
        observers were told (the walk then goes on as if the callback returned ``None``), False if the walk
        must re-raise it.

        Re-raised: anything not an ``Exception`` (``KeyboardInterrupt``, a model thread unwound after its run
        ended); a :class:`~mmu_notifier.errors.KernelError` (an errno the kernel returns through the
        callback, for the caller to handle, as a wrapper around the callback lets it through too); every
        exception when no plugin handles faults; the use after free of an unloaded module's callback (no
        driver code ran); and every exception of a field that isolates the driver inside already
        (:attr:`MMUNotifierOps.isolated`: what reaches the walk then came from a wrapper, not the driver).
        """
        if (not isinstance(error, Exception) or isinstance(error, KernelError) or not self._fault_handlers
                or callback in ops.isolated or ops.unloaded_at is not None):
            return False
        self._fault(ops.name, callback, error)
        return True

    def _fault(self, name: str, callback: str, error: Exception) -> None:
        for handler in list(self._fault_handlers):
            handler.callback_fault(name, callback, error)

    def load_entry_points(
        self,
        configs: Mapping[str, Mapping[str, Any]] | None = None,
        only: Iterable[str] | None = None,
        skip: Iterable[str] = (),
    ) -> LoadReport:
        """Load every driver of the ``mmu_notifier.drivers`` group (or the ones named in ``only``, less ``skip``).

        Models ``modprobe`` of each module on its own: a driver that fails to
        import (or calls ``sys.exit`` while importing), has a config model that
        is not a pydantic model, an invalid config or an invalid default, lacks
        a required hook, has a wrong hook signature or raises while being
        constructed is reported in ``failed`` under its name, with the reason;
        the others still load. Only ``KeyboardInterrupt`` goes through.
        """
        report = LoadReport()
        wanted = set(only) if only is not None else None
        skipped = set(skip)
        for entry_point in available_drivers():
            if (wanted is not None and entry_point.name not in wanted) or entry_point.name in skipped:
                continue
            try:
                report.loaded[entry_point.name] = self._load(entry_point, (configs or {}).get(entry_point.name, {}))
            except (PluginError, ConfigError) as error:
                report.failed[entry_point.name] = error
        for missing in sorted((wanted or set()) - set(report.loaded) - set(report.failed)):
            report.failed[missing] = PluginError(missing, "no such driver is installed")
        return report

    def _load(self, entry_point: importlib.metadata.EntryPoint, raw: Mapping[str, Any]) -> MMUNotifierOps:
        name = entry_point.name
        factory = load_factory(entry_point)
        model = config_model_of(name, factory)
        from mmu_notifier.config import validate

        try:
            config = validate(name, model, raw)
        except ConfigError:
            raise
        except (Exception, SystemExit) as error:  # the plugin's own validators crashed
            raise PluginError(name, f"its config model raised {type(error).__name__}: {error}") from error
        try:
            driver = factory(config)
        except (Exception, SystemExit) as error:
            raise PluginError(name, f"construction failed: {type(error).__name__}: {error}") from error
        return self.add(driver, name)

    def _check_hooks(self, driver: object, name: str) -> None:
        callers = self.pm.get_hookcallers(driver) or []
        unknown = sorted(caller.name for caller in callers if caller.spec is None)
        if unknown:
            raise PluginError(name, f"implements unknown hook(s) {unknown}")
        implemented = {caller.name for caller in callers} - _null_callbacks(driver, name)
        missing = [hook for hook in getattr(driver, "required_hooks", ()) if hook not in implemented]
        if missing:
            raise PluginError(name, f"lacks required hook(s) {missing}")

    # -- resolving --------------------------------------------------------
    def _resolve_all(self) -> None:
        drivers = [ops.driver for ops in self._by_name.values()]
        for ops in self._by_name.values():
            others = [d for d in drivers if d is not ops.driver]
            null = _null_callbacks(ops.driver, ops.name)
            isolated: set[str] = set()
            for callback in (*hookspecs.CALLBACKS, "exerciser"):
                resolved = None if callback in null else self._resolve(ops.driver, callback, others, ops.name, isolated)
                setattr(ops, callback, resolved)
            ops.isolated = frozenset(isolated)
            for counter in self._counters:
                counter.dispatch_counts(ops.name, ops.counts)
        self.observed = bool(self._counters or self._fault_handlers)
        self.generation += 1

    def _resolve(
        self, driver: object, callback: str, others: list[object], name: str = "", isolated: set[str] | None = None
    ) -> Callable[..., Any] | None:
        caller = getattr(self.pm.hook, callback)
        impls = caller.get_hookimpls()
        own = [impl for impl in impls if impl.plugin is driver and not (impl.wrapper or impl.hookwrapper)]
        if not own:
            return None
        spec_args = tuple(caller.spec.argnames)
        foreign = [impl for impl in impls if impl.plugin is not driver and impl.plugin not in others]
        direct = _adapter(own[0].function, spec_args, tuple(own[0].argnames))
        if (callback in DISPATCH_OBSERVED and self._fault_handlers
                and (foreign or any(p not in self._fault_handlers for p in self._callback_wrappers))):
            # something may stand between the walk and the driver: isolate innermost, so that it sees None
            direct = self._isolating(name, callback, direct)
            if isolated is not None:
                isolated.add(callback)
        if callback != "exerciser":
            for plugin in self._callback_wrappers:  # innermost first: the first registered is nearest the driver
                direct = plugin.wrap_callback(name, callback, direct)
        if not foreign:
            return direct
        if all(impl.wrapper and not impl.kwargnames for impl in foreign):
            # pluggy calls the implementations last to first: the last registered wrapper is outermost
            chain = [
                (impl.function, None if tuple(impl.argnames) == spec_args
                 else tuple(spec_args.index(arg) for arg in impl.argnames))
                for impl in reversed(foreign)
            ]
            return _wrapped(direct, chain, callback)
        subset = self.pm.subset_hook_caller(callback, remove_plugins=others)
        return lambda *args: subset(**dict(zip(spec_args, args, strict=True)))

    def _isolating(self, name: str, callback: str, function: Callback) -> Callback:
        """``function`` with its driver's exception routed to the fault handlers (see :meth:`isolate`)."""
        registry = self

        def isolating(*args: Any) -> Any:
            try:
                return function(*args)
            except KernelError:
                raise
            except Exception as error:
                registry._fault(name, callback, error)
                return None

        isolating.__wrapped__ = function  # type: ignore[attr-defined]  # what it calls (functools' convention)
        return isolating

    # -- unloading --------------------------------------------------------
    def unload(self, driver: object) -> None:
        """Module exit: ``mmu_notifier_synchronize``, then the driver's code is gone.

        Models a module that calls ``mmu_notifier_synchronize()`` in its exit function and is
        then unloaded. Raises :class:`MisuseError` naming the driver, with nothing changed, when
        it is unloaded already, when the caller runs inside an SRCU read section (a callback in
        flight: the synchronize could never finish), or when a deferred free is still pending
        after the synchronize. Afterwards the driver is no longer loaded and every callback
        field of its ops raises :class:`UseAfterFreeError` ("use after free of the module").

        As in the kernel, nothing pins the module while a subscription of it is still linked on
        an mm (5.3 radeon's emptied ``radeon_mn``, bug 2 of patch 08): the unload goes ahead, the
        subscription stays on the mm's list, and the next invalidation or release that calls it
        is the use after free the explorer and the invariants report (a deferred callback lands
        in ``kernel.bugs``). ``ops.linked`` says how many were left behind.
        """
        ops = self.ops_of(driver)
        if ops.unloaded_at is not None:
            raise MisuseError(f"driver {ops.name!r} is unloaded already (at {ops.unloaded_at})")
        self.kernel.srcu.barrier()  # mmu_notifier_synchronize (notifier.synchronize), from below it
        if ops.pending_frees:
            raise MisuseError(f"unload of driver {ops.name!r}: {ops.pending_frees} free(s) pending after synchronize")
        caller = sys._getframe(1)
        site = f"{caller.f_code.co_filename}:{caller.f_lineno} in {caller.f_code.co_name}"
        ops.unloaded_at = site
        self.pm.unregister(ops.driver)
        del self._ops[id(ops.driver)]
        del self._by_name[ops.name]
        for callback in (*hookspecs.CALLBACKS, "exerciser"):
            if getattr(ops, callback) is not None:
                setattr(ops, callback, _unloaded_callback(ops.name, callback, site))
        # a call into the unloaded module is no callback of the driver: the walks count it nowhere observed
        ops.counts = CallbackCounts()
        ops.isolated = frozenset()
        self._resolve_all()

    # -- lookup -----------------------------------------------------------
    def ops_of(self, driver: object) -> MMUNotifierOps:
        """The ops of a loaded driver object (or the ops itself, or a driver name)."""
        if isinstance(driver, MMUNotifierOps):
            return driver
        found = self._by_name.get(driver) if isinstance(driver, str) else self._ops.get(id(driver))
        if found is None:
            raise MisuseError(f"driver {driver!r} is not loaded into this kernel")
        return found

    def __iter__(self) -> Any:
        return iter(self._by_name.values())

    def __len__(self) -> int:
        return len(self._by_name)

    def names(self) -> list[str]:
        """Names of the loaded drivers, in load order."""
        return list(self._by_name)

    def scenarios(self) -> list[Any]:
        """Every scenario any plugin adds to the explorer (the ``explore_scenarios`` hook)."""
        return [scenario for batch in self.pm.hook.explore_scenarios() for scenario in batch]

    def scenarios_of(self, name: str) -> list[Any]:
        """The scenarios the loaded driver ``name`` adds (its own ``explore_scenarios`` only).

        Lets a caller isolate one plugin's failure: an exception of this
        driver's hook propagates, naming no other driver.
        """
        driver = self.ops_of(name).driver
        others = [ops.driver for ops in self._by_name.values() if ops.driver is not driver]
        caller = self.pm.subset_hook_caller("explore_scenarios", remove_plugins=others)
        batches = caller()
        return [scenario for batch in batches for scenario in (batch or ())]


def load_factory(entry_point: importlib.metadata.EntryPoint) -> Any:
    """Import a driver's entry point; :class:`PluginError` naming it if the import fails or exits.

    A plugin calling ``sys.exit`` while it is imported is a failed import like
    any other (the kernel's ``init_module`` returning an error), never the end
    of the command that was loading it.
    """
    name = entry_point.name
    try:
        factory = entry_point.load()
    except SystemExit as error:
        raise PluginError(name, f"import failed: it called sys.exit({error.code!r}) while being imported") from None
    except Exception as error:
        raise PluginError(name, f"import failed: {type(error).__name__}: {error}") from error
    declared = getattr(factory, "name", None)
    if declared != name:
        raise PluginError(name, f"declares name {declared!r} but its entry point is {name!r}")
    return factory


def config_model_of(name: str, factory: object) -> type[DriverConfig]:
    """The driver's ``config_model``; :class:`PluginError` unless it is a pydantic model class."""
    from pydantic import BaseModel

    from mmu_notifier.config import DriverConfig

    model = getattr(factory, "config_model", DriverConfig)
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        raise PluginError(name, f"config_model is {model!r}, not a pydantic model "
                                "(a subclass of mmu_notifier.config.DriverConfig)")
    return model  # type: ignore[return-value]


def unmarked_hooks(driver: object) -> list[str]:
    """The driver's methods named like a hook but without the ``@hookimpl`` marker (so never called)."""
    marker = f"{hookspecs.PROJECT}_impl"
    return sorted(
        name for name in HOOK_NAMES
        if callable(method := getattr(type(driver), name, None)) and not hasattr(method, marker)
    )


def _unloaded_callback(name: str, callback: str, site: str) -> Callback:
    """What an ops field points to once its module is gone: a use after free of the module text."""

    def unloaded(*args: Any) -> Any:
        raise UseAfterFreeError(f"{name}.{callback} called after module {name!r} was unloaded", free_site=site)

    return unloaded


def available_drivers() -> list[importlib.metadata.EntryPoint]:
    """Installed entry points of the ``mmu_notifier.drivers`` group, sorted by name."""
    import importlib.metadata

    return sorted(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda ep: ep.name)
