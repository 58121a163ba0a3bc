// The Deno side of a Pyodide sandbox session.
//
// deno run <permissions> runtime.mjs <pyodide dir> <snapshot file or "-"> [make-snapshot]
//
// Frames on stdin/stdout are those of codeact/sandbox/wire.py: a 4-byte big-endian length, then
// UTF-8 JSON. The first frame from the host is "init" (limits, environment, mounts, the Python
// sources of the session); everything after it is handled by _codeact_runtime.serve() in Python,
// which reads and writes frames synchronously through the functions of the `_codeact_host` module.
// Deno's permission flags, set by the host, are the boundary: Python code can reach the whole Deno
// API through the `js` module.

const [pyodideDir, snapshotPath, mode] = Deno.args;
const MAX_FRAME = 16 * 1024 * 1024;

// --- memory limit: refuse to grow WebAssembly memories past the session's limit ----------------
let maxPages = Infinity;
const originalGrow = WebAssembly.Memory.prototype.grow;
WebAssembly.Memory.prototype.grow = function grow(delta) {
  if (this.buffer.byteLength / 65536 + delta > maxPages) {
    throw new RangeError("the sandbox memory limit is reached");
  }
  return originalGrow.call(this, delta);
};

// --- synchronous frames on stdin and stdout ------------------------------------------------------
let pending = new Uint8Array(0);

function readExact(n) {
  while (pending.length < n) {
    const chunk = new Uint8Array(Math.max(65536, n - pending.length));
    const got = Deno.stdin.readSync(chunk);
    if (got === null) return null;
    const joined = new Uint8Array(pending.length + got);
    joined.set(pending);
    joined.set(chunk.subarray(0, got), pending.length);
    pending = joined;
  }
  const out = pending.slice(0, n);
  pending = pending.slice(n);
  return out;
}

function recvFrame() {
  const header = readExact(4);
  if (header === null) return null;
  const length = new DataView(header.buffer).getUint32(0);
  if (length > MAX_FRAME) throw new Error(`frame of ${length} bytes from the host is too large`);
  return readExact(length);
}

function writeAll(bytes) {
  let offset = 0;
  while (offset < bytes.length) offset += Deno.stdout.writeSync(bytes.subarray(offset));
}

function sendFrame(body) {
  const header = new Uint8Array(4);
  new DataView(header.buffer).setUint32(0, body.length);
  writeAll(header);
  writeAll(body);
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();
const sendJson = (message) => sendFrame(encoder.encode(JSON.stringify(message)));

// --- output written below sys.stdout (os.write(1, ...), C code), kept per step ------------------
let rawLimit = 1 << 20;
const raw = { 1: [], 2: [] };
const rawSize = { 1: 0, 2: 0 };
const rawDropped = { 1: 0, 2: 0 };

function rawWriter(fd) {
  return {
    write(bytes) {
      const room = rawLimit - rawSize[fd];
      if (room > 0) {
        const piece = bytes.slice(0, room);
        raw[fd].push(piece);
        rawSize[fd] += piece.length;
      }
      rawDropped[fd] += Math.max(0, bytes.length - Math.max(room, 0));
      return bytes.length;
    },
  };
}

function drainRaw(fd) {
  const total = new Uint8Array(rawSize[fd]);
  let offset = 0;
  for (const piece of raw[fd]) {
    total.set(piece, offset);
    offset += piece.length;
  }
  const dropped = rawDropped[fd];
  raw[fd] = [];
  rawSize[fd] = 0;
  rawDropped[fd] = 0;
  const text = decoder.decode(total);
  return dropped ? `${text}\n... [${dropped} bytes cut] ...\n` : text;
}

// --- time limit: a worker raises KeyboardInterrupt in Python through the interrupt buffer --------
// Slots: 0 = Pyodide's interrupt signal, 1 = generation of the armed step, 2 = fired, 3 = orphaned.
const control = new Int32Array(new SharedArrayBuffer(16));
const workerSource = `
let timer = null;
let control = null;
let parent = null;
self.onmessage = (event) => {
  const { op, ms, generation } = event.data;
  if (op === "init") {
    control = event.data.control;
    parent = Deno.ppid;
    setInterval(() => {
      if (Deno.ppid !== parent) { Atomics.store(control, 3, 1); Atomics.store(control, 0, 2); }
    }, 1000);
    return;
  }
  if (timer !== null) { clearTimeout(timer); timer = null; }
  if (op !== "arm") return;
  const fire = () => {
    if (Atomics.load(control, 1) !== generation) return;
    Atomics.store(control, 2, 1);
    Atomics.store(control, 0, 2);
    timer = setTimeout(fire, 200);
  };
  timer = setTimeout(fire, ms);
};
`;
const watchdog = new Worker(`data:text/javascript,${encodeURIComponent(workerSource)}`, {
  type: "module",
});
watchdog.postMessage({ op: "init", control });

function arm(seconds) {
  const generation = Atomics.add(control, 1, 1) + 1;
  Atomics.store(control, 2, 0);
  Atomics.store(control, 0, 0);
  watchdog.postMessage({ op: "arm", ms: Math.max(1, seconds * 1000), generation });
}

function disarm() {
  Atomics.add(control, 1, 1);
  watchdog.postMessage({ op: "disarm" });
  const fired = Atomics.load(control, 2) === 1;
  Atomics.store(control, 0, 0);
  return fired;
}

// --- files: granted host directories mounted at the same paths, and limits on what is written -----
const EFBIG = 22; // errno numbers of Emscripten's libc
const ENOSPC = 51;
const SPECIAL_BITS = 0o7000; // setuid, setgid, sticky: never set on host files

function permissionAsErrno(nodefs) {
  // A Deno permission refusal has no errno code; Pyodide would treat it as a fatal error.
  const original = nodefs.tryFSOperation;
  nodefs.tryFSOperation = (operation) =>
    original.call(nodefs, () => {
      try {
        return operation();
      } catch (error) {
        if (error && !error.code) {
          const denied = error instanceof Deno.errors.NotCapable ||
            error instanceof Deno.errors.PermissionDenied;
          error.code = denied ? "EACCES" : "EIO";
        }
        throw error;
      }
    });
}

function limitHostFiles(FS, nodefs, maxFileSize) {
  const { node_ops: nodeOps, stream_ops: streamOps } = nodefs;
  const mknod = nodeOps.mknod;
  nodeOps.mknod = (parent, name, mode, dev) => mknod(parent, name, mode & ~SPECIAL_BITS, dev);
  const setattr = nodeOps.setattr;
  nodeOps.setattr = (node, attr) => {
    if (attr.mode !== undefined && attr.mode !== null) attr.mode &= ~SPECIAL_BITS;
    return setattr(node, attr);
  };
  if (streamOps.setattr) {
    const streamSetattr = streamOps.setattr;
    streamOps.setattr = (stream, attr) => {
      if (attr.mode !== undefined && attr.mode !== null) attr.mode &= ~SPECIAL_BITS;
      if (maxFileSize && attr.size > maxFileSize) throw new FS.ErrnoError(EFBIG);
      return streamSetattr(stream, attr);
    };
  }
  const write = streamOps.write;
  streamOps.write = (stream, buffer, offset, length, position) => {
    const at = typeof position === "number" ? position : stream.position;
    if (maxFileSize && at + length > maxFileSize) throw new FS.ErrnoError(EFBIG);
    return write(stream, buffer, offset, length, position);
  };
}

function limitMemoryFiles(FS, memfs, maxFileSize, totalLimit) {
  // In-memory files (/tmp) live outside WebAssembly memory: their size is capped here.
  let total = 0;
  let busy = false; // a write may grow the file through the other wrapped functions: count it once
  const capacity = (node) => (node.contents && node.contents.length) || 0;
  const guarded = (grow, run) => {
    if (busy) return run();
    const node = grow.node;
    const before = capacity(node);
    if (maxFileSize && grow.size > maxFileSize) throw new FS.ErrnoError(EFBIG);
    if (totalLimit && total + Math.max(0, grow.size - before) > totalLimit) throw new FS.ErrnoError(ENOSPC);
    busy = true;
    try {
      return run();
    } finally {
      busy = false;
      total += capacity(node) - before;
    }
  };
  // Nodes take their functions from MEMFS.ops_table, copied when the first node was made.
  const fileStream = memfs.ops_table.file.stream;
  const write = fileStream.write;
  fileStream.write = (stream, buffer, offset, length, position, canOwn) => {
    const at = typeof position === "number" ? position : stream.position;
    const size = Math.max(at + length, stream.node.usedBytes || 0);
    return guarded({ node: stream.node, size }, () => write(stream, buffer, offset, length, position, canOwn));
  };
  const expand = memfs.expandFileStorage;
  memfs.expandFileStorage = (node, newCapacity) =>
    guarded({ node, size: newCapacity }, () => expand.call(memfs, node, newCapacity));
  const resize = memfs.resizeFileStorage;
  memfs.resizeFileStorage = (node, newSize) =>
    guarded({ node, size: newSize }, () => resize.call(memfs, node, newSize));
  const dirNode = memfs.ops_table.dir.node;
  const unlink = dirNode.unlink;
  dirNode.unlink = (parent, name) => {
    const node = parent.contents && parent.contents[name];
    const freed = node ? capacity(node) : 0;
    unlink(parent, name);
    total -= freed;
  };
}

const grantedFiles = [];

function mount(pyodide, at, isFile, writable) {
  const FS = pyodide.FS;
  if (!isFile) {
    FS.mkdirTree(at);
    FS.mount(FS.filesystems.NODEFS, { root: at }, at);
    return;
  }
  // A granted file is copied in (its directory cannot be mounted without exposing its siblings);
  // a writable one is copied back after each step that changed it.
  FS.mkdirTree(at.slice(0, at.lastIndexOf("/")) || "/");
  FS.writeFile(at, Deno.readFileSync(at));
  FS.chmod(at, writable ? 0o644 : 0o444);
  grantedFiles.push({ at, writable, mtime: FS.stat(at).mtime.getTime() });
}

function syncFiles(FS) {
  const failed = [];
  for (const file of grantedFiles) {
    if (!file.writable) continue;
    try {
      const mtime = FS.stat(file.at).mtime.getTime();
      if (mtime === file.mtime) continue;
      Deno.writeFileSync(file.at, FS.readFile(file.at));
      file.mtime = mtime;
    } catch (error) {
      failed.push(`${file.at}: ${error.message || error}`);
    }
  }
  return failed.join("; ");
}

// --- start ----------------------------------------------------------------------------------------
const started = performance.now();
const initBody = recvFrame();
if (initBody === null) Deno.exit(0);
const init = JSON.parse(decoder.decode(initBody));
if (init.memory_limit > 0) maxPages = Math.ceil(init.memory_limit / 65536);
rawLimit = init.output_limit || rawLimit;

const { loadPyodide } = await import(`${pyodideDir}/pyodide.mjs`);
const options = {
  indexURL: `${pyodideDir}/`,
  env: {},
  stdin: () => null,
  stdout: () => {},
  stderr: () => {},
  checkAPIVersion: true,
};
let fromSnapshot = false;
if (mode === "make-snapshot") {
  options._makeSnapshot = true;
} else if (snapshotPath && snapshotPath !== "-") {
  try {
    options._loadSnapshot = Deno.readFileSync(snapshotPath);
    fromSnapshot = true;
  } catch {
    fromSnapshot = false;
  }
}
let pyodide;
try {
  pyodide = await loadPyodide(options);
} catch (error) {
  if (!fromSnapshot) throw error;
  delete options._loadSnapshot;
  fromSnapshot = false;
  pyodide = await loadPyodide(options);
}
const loaded = performance.now();
delete options._loadSnapshot; // 30 MB that the session no longer needs

if (!fromSnapshot) {
  // The session's Python modules, compiled into the snapshot when one is made.
  pyodide.runPython(
    `
import sys, types
def _codeact_module(name, source):
    module = types.ModuleType(name)
    module.__file__ = "<" + name + ">"
    sys.modules[name] = module
    exec(compile(source, module.__file__, "exec"), module.__dict__)
_codeact_module("_codeact_wire", _codeact_sources["wire"])
_codeact_module("_codeact_step", _codeact_sources["step"])
_codeact_module("_codeact_runtime", _codeact_sources["runtime"])
del _codeact_module, _codeact_sources
`,
    { globals: pyodide.toPy({ _codeact_sources: init.sources }) },
  );
}

if (mode === "make-snapshot") {
  Deno.writeFileSync(init.snapshot_out, pyodide.makeMemorySnapshot());
  sendJson({ op: "snapshot", path: init.snapshot_out });
  Deno.exit(0);
}

pyodide.setStdout({ write: rawWriter(1).write });
pyodide.setStderr({ write: rawWriter(2).write });
pyodide.setInterruptBuffer(control);
permissionAsErrno(pyodide.FS.filesystems.NODEFS);
const mounted = [];
const refused = [];
for (const { at, file, writable } of init.mounts) {
  if (mounted.some((outer) => at === outer || at.startsWith(outer.endsWith("/") ? outer : `${outer}/`))) {
    continue; // inside a mounted grant already: Deno's flags decide what it may do there
  }
  try {
    mount(pyodide, at, file, writable);
    if (!file) mounted.push(at);
  } catch (error) {
    refused.push(`${at}: ${error.message}`);
  }
}

limitHostFiles(pyodide.FS, pyodide.FS.filesystems.NODEFS, init.max_file_size || 0);
limitMemoryFiles(pyodide.FS, pyodide.FS.filesystems.MEMFS, init.max_file_size || 0, init.tmp_size || 0);

// The in-memory root is read-only apart from /tmp, as in the native sandbox; device nodes that lead
// nowhere useful and the empty home directories are removed.
const FS = pyodide.FS;
FS.chdir("/tmp");
for (const path of ["/home/pyodide", "/home/web_user", "/home", "/dev/shm/tmp", "/dev/shm"]) {
  try { FS.rmdir(path); } catch { /* absent */ }
}
for (const path of ["/dev/tty", "/dev/tty1"]) {
  try { FS.unlink(path); } catch { /* absent */ }
}
const readOnly = new Set(["/", "/lib", "/dev", "/proc"]);
for (const at of [...mounted, ...init.mounts.filter((m) => m.file).map((m) => m.at)]) {
  for (let parent = at.slice(0, at.lastIndexOf("/")); parent; parent = parent.slice(0, parent.lastIndexOf("/"))) {
    if (parent !== "/tmp" && !parent.startsWith("/tmp/")) readOnly.add(parent);
  }
}
for (const path of readOnly) {
  try { FS.chmod(path, 0o555); } catch { /* absent */ }
}

pyodide.registerJsModule("_codeact_host", {
  send: (bytes) => writeAll(bytes),
  recv: () => recvFrame(),
  arm,
  disarm,
  orphaned: () => Atomics.load(control, 3) === 1,
  interrupted: () => Atomics.load(control, 0) !== 0,
  drain: drainRaw,
  sync: () => syncFiles(pyodide.FS),
});

sendJson({
  op: "ready",
  snapshot: fromSnapshot,
  load_ms: loaded - started,
  ready_ms: performance.now() - started,
  mounted,
  refused,
  version: pyodide.version,
});
pyodide.runPython("import _codeact_runtime; _codeact_runtime.serve(_codeact_init)", {
  globals: pyodide.toPy({ _codeact_init: init }),
});
Deno.exit(0);
