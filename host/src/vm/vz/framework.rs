//! The thin layer over Virtualization.framework (macOS only): a
//! [`VzPlan`] becomes a VZVirtualMachineConfiguration, the VM runs on its
//! own serial dispatch queue, and its vsock device opens and accepts
//! connections for the relay (relay.rs). Every decision is the plan's.
//!
//! Threading: VZ objects are not thread-safe. The VM is created with
//! `initWithConfiguration:queue:`, and every call on it or its devices, and
//! every completion handler, runs on that queue; [`QueueBound`] is the only
//! way an object crosses threads, and it is dereferenced only there.

use std::ffi::c_int;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::Path;
use std::sync::{Arc, Mutex};

use block2::RcBlock;
use dispatch2::{DispatchQueue, DispatchQueueAttr, DispatchRetained};
use objc2::rc::Retained;
use objc2::runtime::{NSObject, NSObjectProtocol, ProtocolObject};
use objc2::{define_class, msg_send, AllocAnyThread, DefinedClass};
use objc2_foundation::{NSArray, NSError, NSString, NSURL};
use objc2_virtualization::*;
use tokio::sync::{mpsc, oneshot};

use super::errors::FrameworkError;
use super::plan::{HostLimits, VzPlan};

/// A VZ object that crosses threads to be used on the VM's queue.
struct QueueBound<T: ?Sized>(Retained<T>);

// SAFETY: the object is only dereferenced inside closures run on the VM's
// serial queue (Machine::on_queue and the handlers VZ calls there), which is
// the framework's threading rule; moving the pointer itself, and the
// retain/release of Retained, are thread-safe in the Objective-C runtime.
unsafe impl<T: ?Sized> Send for QueueBound<T> {}

impl<T: ?Sized> QueueBound<T> {
    /// Only on the VM's queue (see the Send impl). A method, not the field,
    /// so that closures capture the whole wrapper.
    fn on_the_queue(&self) -> &T {
        &self.0
    }
}

impl FrameworkError {
    fn from_ns(err: &NSError) -> FrameworkError {
        FrameworkError {
            domain: err.domain().to_string(),
            code: err.code() as i64,
            description: err.localizedDescription().to_string(),
        }
    }
}

fn url(path: &Path) -> Retained<NSURL> {
    NSURL::fileURLWithPath(&NSString::from_str(&path.to_string_lossy()))
}

fn config_error(what: &str, err: &NSError) -> FrameworkError {
    let mut err = FrameworkError::from_ns(err);
    err.description = format!("{what}: {}", err.description);
    err
}

/// This host's limits, as the framework reports them.
pub fn host_limits() -> HostLimits {
    // SAFETY: class properties without preconditions, readable from any thread.
    unsafe {
        HostLimits {
            min_cpus: VZVirtualMachineConfiguration::minimumAllowedCPUCount() as u32,
            max_cpus: VZVirtualMachineConfiguration::maximumAllowedCPUCount() as u32,
            min_memory_bytes: VZVirtualMachineConfiguration::minimumAllowedMemorySize(),
            max_memory_bytes: VZVirtualMachineConfiguration::maximumAllowedMemorySize(),
        }
    }
}

/// Whether this Mac can run VMs at all.
pub fn virtualization_supported() -> bool {
    // SAFETY: a class property without preconditions.
    unsafe { VZVirtualMachine::isSupported() }
}

/// The running macOS's major version.
pub fn macos_major() -> u64 {
    objc2_foundation::NSProcessInfo::processInfo().operatingSystemVersion().majorVersion as u64
}

/// Whether Rosetta for Linux is installed (never installed from here: that prompts the user).
pub fn rosetta_installed() -> bool {
    #[cfg(target_arch = "aarch64")]
    {
        // SAFETY: a class method without preconditions.
        unsafe { VZLinuxRosettaDirectoryShare::availability() == VZLinuxRosettaAvailability::Installed }
    }
    #[cfg(not(target_arch = "aarch64"))]
    false
}

/// The VZVirtualMachineConfiguration for `plan`, validated.
pub fn build_configuration(
    plan: &VzPlan,
    rosetta: bool,
) -> Result<Retained<VZVirtualMachineConfiguration>, FrameworkError> {
    // SAFETY: plain object construction and property setters, called before
    // any VM exists (configurations are not bound to a queue); every argument
    // is a live object of the type the header asks for.
    unsafe {
        let cfg = VZVirtualMachineConfiguration::new();
        let boot = VZLinuxBootLoader::initWithKernelURL(VZLinuxBootLoader::alloc(), &url(&plan.kernel));
        boot.setInitialRamdiskURL(Some(&url(&plan.initramfs)));
        boot.setCommandLine(&NSString::from_str(&plan.cmdline));
        cfg.setBootLoader(Some(&boot));
        // The Linux boot loader requires the generic platform.
        cfg.setPlatform(&VZGenericPlatformConfiguration::new());
        cfg.setCPUCount(plan.cpus as usize);
        cfg.setMemorySize(plan.memory_bytes);

        // Cached (the host's page cache) with fsync on the guest's flushes: a
        // flush the guest waited for is on the Mac's disk, not only in its cache.
        let disk = VZDiskImageStorageDeviceAttachment::initWithURL_readOnly_cachingMode_synchronizationMode_error(
            VZDiskImageStorageDeviceAttachment::alloc(),
            &url(&plan.disk),
            false,
            VZDiskImageCachingMode::Cached,
            VZDiskImageSynchronizationMode::Fsync,
        )
        .map_err(|e| config_error(&format!("the data disk {}", plan.disk.display()), &e))?;
        let block =
            VZVirtioBlockDeviceConfiguration::initWithAttachment(VZVirtioBlockDeviceConfiguration::alloc(), &disk);
        cfg.setStorageDevices(&NSArray::from_retained_slice(&[Retained::into_super(block)]));

        let mut shares: Vec<Retained<VZDirectorySharingDeviceConfiguration>> = Vec::new();
        for share in &plan.shares {
            let tag = NSString::from_str(&share.tag);
            VZVirtioFileSystemDeviceConfiguration::validateTag_error(&tag)
                .map_err(|e| config_error(&format!("the shared directory tag {:?}", share.tag), &e))?;
            let dir =
                VZSharedDirectory::initWithURL_readOnly(VZSharedDirectory::alloc(), &url(&share.host_path), false);
            let single = VZSingleDirectoryShare::initWithDirectory(VZSingleDirectoryShare::alloc(), &dir);
            let device = VZVirtioFileSystemDeviceConfiguration::initWithTag(
                VZVirtioFileSystemDeviceConfiguration::alloc(),
                &tag,
            );
            device.setShare(Some(&single));
            shares.push(Retained::into_super(device));
        }
        // Rosetta is a convenience: without it the VM still boots.
        if rosetta {
            match rosetta_device() {
                Ok(device) => shares.push(device),
                Err(err) => eprintln!("berth: {}", super::errors::describe(super::errors::Step::Rosetta, &err)),
            }
        }
        cfg.setDirectorySharingDevices(&NSArray::from_retained_slice(&shares));

        cfg.setSocketDevices(&NSArray::from_retained_slice(&[Retained::into_super(
            VZVirtioSocketDeviceConfiguration::new(),
        )]));

        let net = VZVirtioNetworkDeviceConfiguration::new();
        net.setAttachment(Some(&VZNATNetworkDeviceAttachment::new()));
        let mac = VZMACAddress::initWithString(VZMACAddress::alloc(), &NSString::from_str(&plan.network.mac_string()))
            .ok_or_else(|| FrameworkError {
                domain: "berth".into(),
                code: 0,
                description: format!("VZ refused the MAC address {}", plan.network.mac_string()),
            })?;
        net.setMACAddress(&mac);
        cfg.setNetworkDevices(&NSArray::from_retained_slice(&[Retained::into_super(net)]));

        let mut consoles: Vec<Retained<VZSerialPortConfiguration>> = Vec::new();
        for console in &plan.consoles {
            let sink = VZFileSerialPortAttachment::initWithURL_append_error(
                VZFileSerialPortAttachment::alloc(),
                &url(&console.log),
                true,
            )
            .map_err(|e| config_error(&format!("the console log {}", console.log.display()), &e))?;
            let port = VZVirtioConsoleDeviceSerialPortConfiguration::new();
            port.setAttachment(Some(&sink));
            consoles.push(Retained::into_super(port));
        }
        cfg.setSerialPorts(&NSArray::from_retained_slice(&consoles));

        cfg.setEntropyDevices(&NSArray::from_retained_slice(&[Retained::into_super(
            VZVirtioEntropyDeviceConfiguration::new(),
        )]));
        cfg.setMemoryBalloonDevices(&NSArray::from_retained_slice(&[Retained::into_super(
            VZVirtioTraditionalMemoryBalloonDeviceConfiguration::new(),
        )]));

        cfg.validateWithError().map_err(|e| FrameworkError::from_ns(&e))?;
        Ok(cfg)
    }
}

#[cfg(target_arch = "aarch64")]
fn rosetta_device() -> Result<Retained<VZDirectorySharingDeviceConfiguration>, FrameworkError> {
    // SAFETY: construction of configuration objects, before any VM exists.
    unsafe {
        let share = VZLinuxRosettaDirectoryShare::initWithError(VZLinuxRosettaDirectoryShare::alloc())
            .map_err(|e| FrameworkError::from_ns(&e))?;
        let device = VZVirtioFileSystemDeviceConfiguration::initWithTag(
            VZVirtioFileSystemDeviceConfiguration::alloc(),
            &NSString::from_str(super::plan::ROSETTA_TAG),
        );
        device.setShare(Some(&share));
        Ok(Retained::into_super(device))
    }
}

#[cfg(not(target_arch = "aarch64"))]
fn rosetta_device() -> Result<Retained<VZDirectorySharingDeviceConfiguration>, FrameworkError> {
    Err(FrameworkError { domain: "berth".into(), code: 0, description: "Rosetta needs an Apple silicon Mac".into() })
}

/// The VM's state, as the helper acts on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Running,
    /// Stopped (the guest powered off) or never started.
    Stopped,
    /// The framework stopped the VM on an internal error.
    Error,
    /// Starting, stopping, pausing, saving...: wait and look again.
    Changing,
}

/// Connections the guest opened to a host port: (port, the connection's socket).
pub type GuestConnections = mpsc::UnboundedSender<(u32, OwnedFd)>;

struct ListenerIvars {
    accepted: GuestConnections,
}

define_class!(
    // SAFETY: NSObject has no subclassing requirements and the class has no Drop.
    // It has no thread_kind: VZ calls it on the VM's queue, not the main thread.
    #[unsafe(super(NSObject))]
    #[name = "BerthVsockListenerDelegate"]
    #[ivars = ListenerIvars]
    struct ListenerDelegate;

    unsafe impl NSObjectProtocol for ListenerDelegate {}

    unsafe impl VZVirtioSocketListenerDelegate for ListenerDelegate {
        #[unsafe(method(listener:shouldAcceptNewConnection:fromSocketDevice:))]
        fn should_accept(
            &self,
            _listener: &VZVirtioSocketListener,
            connection: &VZVirtioSocketConnection,
            _device: &VZVirtioSocketDevice,
        ) -> bool {
            // SAFETY: called by VZ on the VM's queue with a live connection.
            let (fd, port) = unsafe { (connection.fileDescriptor(), connection.destinationPort()) };
            match duplicate(fd) {
                Ok(fd) => self.ivars().accepted.send((port, fd)).is_ok(),
                Err(err) => {
                    tracing::warn!(%err, port, "could not take the guest's vsock connection");
                    false
                }
            }
        }
    }
);

impl ListenerDelegate {
    fn new(accepted: GuestConnections) -> Retained<Self> {
        let this = Self::alloc().set_ivars(ListenerIvars { accepted });
        // SAFETY: NSObject's init on a freshly allocated object.
        unsafe { msg_send![super(this), init] }
    }
}

/// A connection's own copy of its socket: VZ closes the connection's
/// descriptor when the connection object goes away.
fn duplicate(fd: c_int) -> io::Result<OwnedFd> {
    // SAFETY: dup of a descriptor VZ keeps open for the duration of this call.
    let copy = unsafe { libc::dup(fd) };
    if copy < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `copy` is a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(copy) })
}

/// A created VM and its queue.
pub struct Machine {
    queue: DispatchRetained<DispatchQueue>,
    vm: Mutex<QueueBound<VZVirtualMachine>>,
    /// The listeners' delegates: a listener holds its delegate weakly.
    delegates: Mutex<Vec<QueueBound<ListenerDelegate>>>,
}

type Completion<T> = Arc<Mutex<Option<oneshot::Sender<T>>>>;

/// A completion handler VZ may call once; later calls (none are expected) are ignored.
fn complete<T>(done: &Completion<T>, value: T) {
    if let Some(sender) = done.lock().unwrap().take() {
        let _ = sender.send(value);
    }
}

fn cancelled() -> FrameworkError {
    FrameworkError { domain: "berth".into(), code: 0, description: "the VM's queue dropped the request".into() }
}

impl Machine {
    /// Creates the VM from a validated configuration.
    pub fn create(config: &VZVirtualMachineConfiguration) -> Machine {
        let queue = DispatchQueue::new("dev.berth.vz", DispatchQueueAttr::SERIAL);
        // SAFETY: the configuration was validated (build_configuration); the
        // queue is serial, as the initialiser requires.
        let vm = unsafe { VZVirtualMachine::initWithConfiguration_queue(VZVirtualMachine::alloc(), config, &queue) };
        Machine { queue, vm: Mutex::new(QueueBound(vm)), delegates: Mutex::new(Vec::new()) }
    }

    /// Runs `work` with the VM on its queue.
    fn dispatch(&self, work: impl FnOnce(&VZVirtualMachine) + Send + 'static) {
        let vm = QueueBound(self.vm.lock().unwrap().0.clone());
        self.queue.exec_async(move || work(vm.on_the_queue()));
    }

    /// Runs `work` with the VM on its queue; resolves with its result.
    fn on_queue<R: Send + 'static>(
        &self,
        work: impl FnOnce(&VZVirtualMachine) -> R + Send + 'static,
    ) -> oneshot::Receiver<R> {
        let (tx, rx) = oneshot::channel();
        self.dispatch(move |vm| {
            let _ = tx.send(work(vm));
        });
        rx
    }

    /// Calls one of the VM's `...WithCompletionHandler:` methods on the queue.
    async fn with_completion(
        &self,
        call: impl FnOnce(&VZVirtualMachine, &block2::DynBlock<dyn Fn(*mut NSError)>) + Send + 'static,
    ) -> Result<(), FrameworkError> {
        let (tx, rx) = oneshot::channel::<Result<(), FrameworkError>>();
        let done: Completion<Result<(), FrameworkError>> = Arc::new(Mutex::new(Some(tx)));
        self.dispatch(move |vm| {
            let block = RcBlock::new(move |err: *mut NSError| {
                // SAFETY: VZ passes nil or a live NSError for the call's duration.
                let result = match unsafe { err.as_ref() } {
                    None => Ok(()),
                    Some(err) => Err(FrameworkError::from_ns(err)),
                };
                complete(&done, result);
            });
            call(vm, &block);
        });
        rx.await.unwrap_or_else(|_| Err(cancelled()))
    }

    pub async fn start(&self) -> Result<(), FrameworkError> {
        // SAFETY: called on the VM's queue (with_completion).
        self.with_completion(|vm, done| unsafe { vm.startWithCompletionHandler(done) }).await
    }

    /// Ends the VM at once (the guest gets no say).
    pub async fn stop(&self) -> Result<(), FrameworkError> {
        // SAFETY: called on the VM's queue (with_completion).
        self.with_completion(|vm, done| unsafe {
            if vm.canStop() {
                vm.stopWithCompletionHandler(done)
            } else {
                done.call((std::ptr::null_mut(),))
            }
        })
        .await
    }

    /// Asks the guest to power off; false when the VM cannot be asked now.
    pub async fn request_stop(&self) -> Result<bool, FrameworkError> {
        // SAFETY: called on the VM's queue.
        let asked = self.on_queue(|vm| unsafe {
            if !vm.canRequestStop() {
                return Ok(false);
            }
            vm.requestStopWithError().map(|()| true).map_err(|e| FrameworkError::from_ns(&e))
        });
        asked.await.unwrap_or_else(|_| Err(cancelled()))
    }

    pub async fn state(&self) -> State {
        // SAFETY: called on the VM's queue.
        let state = self.on_queue(|vm| unsafe { vm.state() });
        match state.await {
            Ok(VZVirtualMachineState::Running) => State::Running,
            Ok(VZVirtualMachineState::Stopped) => State::Stopped,
            Ok(VZVirtualMachineState::Error) => State::Error,
            Ok(_) => State::Changing,
            Err(_) => State::Error,
        }
    }

    /// Opens a connection to the guest's vsock `port` (as a socket of this process).
    pub async fn connect(&self, port: u32) -> io::Result<OwnedFd> {
        let (tx, rx) = oneshot::channel::<io::Result<OwnedFd>>();
        let done: Completion<io::Result<OwnedFd>> = Arc::new(Mutex::new(Some(tx)));
        self.dispatch(move |vm| {
            let Some(device) = socket_device(vm) else {
                return complete(&done, Err(io::Error::other("the VM has no vsock device")));
            };
            let block = RcBlock::new(move |connection: *mut VZVirtioSocketConnection, err: *mut NSError| {
                // SAFETY: VZ passes either a live connection or a live error, for the call's duration.
                let result = match unsafe { (connection.as_ref(), err.as_ref()) } {
                    // SAFETY: a live connection, on the VM's queue.
                    (Some(connection), None) => duplicate(unsafe { connection.fileDescriptor() }),
                    (_, Some(err)) => {
                        Err(io::Error::new(io::ErrorKind::ConnectionRefused, FrameworkError::from_ns(err).description))
                    }
                    (None, None) => Err(io::Error::other("VZ returned neither a connection nor an error")),
                };
                complete(&done, result);
            });
            // SAFETY: on the VM's queue, with the VM's own device.
            unsafe { device.connectToPort_completionHandler(port, &block) };
        });
        // No answer (VZ "does nothing" when the guest does not listen) is the relay's timeout.
        rx.await.unwrap_or_else(|_| Err(io::Error::other("the VM's queue dropped the connection")))
    }

    /// Accepts the guest's connections to each of `ports`, handing them to `accepted`.
    pub async fn listen(&self, ports: &[u32], accepted: GuestConnections) -> Result<(), FrameworkError> {
        let ports = ports.to_vec();
        let delegate = self.on_queue(move |vm| {
            let device = socket_device(vm)?;
            let delegate = ListenerDelegate::new(accepted);
            // SAFETY: on the VM's queue (setSocketListener crashes elsewhere), with the VM's own device.
            unsafe {
                let listener = VZVirtioSocketListener::new();
                listener.setDelegate(Some(ProtocolObject::from_ref(&*delegate)));
                for port in ports {
                    device.setSocketListener_forPort(&listener, port);
                }
            }
            Some(QueueBound(delegate))
        });
        match delegate.await {
            Ok(Some(delegate)) => {
                self.delegates.lock().unwrap().push(delegate);
                Ok(())
            }
            _ => Err(FrameworkError {
                domain: "berth".into(),
                code: 0,
                description: "the VM has no vsock device".into(),
            }),
        }
    }
}

/// The VM's one virtio socket device.
fn socket_device(vm: &VZVirtualMachine) -> Option<Retained<VZVirtioSocketDevice>> {
    // SAFETY: on the VM's queue; the configuration has exactly one socket
    // device and it is a VZVirtioSocketDeviceConfiguration, so the VM's
    // device is a VZVirtioSocketDevice.
    unsafe { vm.socketDevices().firstObject().map(|device| Retained::cast_unchecked(device)) }
}
