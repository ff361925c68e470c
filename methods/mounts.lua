-- mounts.*: the instance's mounts, and the volumes and CephFS shares Exosphere attaches.
--
-- What is mounted comes from /proc/self/mountinfo, which this worker reads itself; facts about
-- devices from /sys, /proc/partitions and udev's database; volume names from the OpenStack
-- metadata service (agent.metadata). Anything that needs root (probing a device, mkfs, mount,
-- unmount, the processes holding a busy mount, the unit and secret of a share) is asked of the
-- monitor through agent.mounts, which checks every request again on its side
-- (docs/decisions/0008-mount-operations.md). Names follow today's automount
-- (../shared/EXOSPHERE.md "Volumes"): /media/volume/<sanitised volume name>, ".part<N>" for a
-- partition, "-<kernel name>", then "-1", "-2", ... on a collision.

local MAX_COLLISIONS = 100
local NAME_MAX = 200

--------------------------------------------------------------------------------------------
-- Schemas.

local Kind = T.enum({ "volume", "share", "other" })

local Mount = T.object({
  kind = Kind:describe("volume: under the volume prefix (/media/volume) or an attached disk; "
    .. "share: under the share prefix (/media/share) or a CephFS mount; other: the rest"),
  mountpoint = T.string():describe("Where it is mounted (octal escapes of mountinfo decoded)"),
  device = T.string():describe("The mount's source: a device path, a CephFS export path, or "
    .. "the pseudo file system's name"),
  kernel_name = T.nullable(T.string()):describe("Kernel name of the block device (vdb, vdb1), "
    .. "or null when the source is not a block device"),
  fstype = T.string():describe("File system type (ext4, ceph, fuse.ceph, tmpfs, ...)"),
  label = T.nullable(T.string()):describe("File system label, when known"),
  uuid = T.nullable(T.string()):describe("File system UUID, when known"),
  options = T.array(T.string()):describe("Mount and super-block options; the values of "
    .. "secret-bearing options are replaced by <hidden>"),
  read_only = T.boolean():describe("Mounted read-only"),
  size_bytes = T.nullable(T.integer({ min = 0 })):describe("Size of the file system, or null "
    .. "when it cannot be read (statfs failed)"),
  used_bytes = T.nullable(T.integer({ min = 0 })):describe("Bytes in use, as df counts them"),
  free_bytes = T.nullable(T.integer({ min = 0 })):describe("Bytes available to unprivileged users"),
  unit = T.nullable(T.string()):describe("The systemd mount unit of this mountpoint, or null "
    .. "without systemd"),
  volume_id = T.nullable(T.string()):describe("For volumes: the disk's serial, the Cinder "
    .. "volume id (cut to 20 characters on virtio)"),
  volume_name = T.nullable(T.string()):describe("For volumes: the volume's name from the "
    .. "metadata service, else the kernel name"),
})

local Holder = T.object({
  pid = T.integer({ min = 1 }),
  command = T.string():describe("The process's command name (comm)"),
  user = T.string():describe("Its user's name, or the uid as text"),
  uid = T.integer({ min = 0 }),
  use = T.enum({ "fd", "cwd", "root", "exe", "mmap" }):describe("How it holds the mount"),
  fd = T.integer({ min = 0 }):optional():describe("The file descriptor, for use = fd"),
  path = T.string():describe("The file it holds (cut to 256 bytes)"),
})

--------------------------------------------------------------------------------------------
-- Errors. Each failure has a JSON-RPC code (sandbox/errors.lua) and a stable data.reason
-- (docs/protocol.md, "Mount errors").

local function fail(kind, reason, message, data)
  data = data or {}
  data.reason = reason
  error(kind(message, data))
end

-- The monitor's codes (runtime/l_mounts.c) as error kinds.
local MONITOR_KINDS = {
  not_found = errors.NotFound,
  not_block = errors.NotFound,
  not_mounted = errors.NotFound,
  root_disk = errors.NotPermitted,
  mounted = errors.AlreadyExists,
  already_mounted = errors.AlreadyExists,
  has_signature = errors.AlreadyExists,
  partitioned = errors.Unsupported,
  busy = errors.Busy,
  permission_denied = errors.NotPermitted,
  unreachable = errors.Unavailable,
  no_client = errors.Unsupported,
  no_systemd = errors.Unsupported,
  no_owner = errors.Unavailable,
  unavailable = errors.Unavailable,
  timeout = errors.Timeout,
}

-- Raises the error for a failed agent.mounts call: nil, code, message, and for a busy
-- unmount the holders and how many more there were.
local function monitor_failed(code, message, holders, truncated)
  if code == "invalid" then
    -- The binding refused what the monitor would take for an attack: from a client's value
    -- (an export path, say) that the schema could not judge.
    error(errors.InvalidParams("params", message or "refused by the monitor's checks"))
  end
  local kind = MONITOR_KINDS[code] or errors.Failed
  local d = { reason = code or "failed" }
  if code == "busy" and holders == nil then
    -- Not a busy mount: [mounts] max_in_flight operations are running.
    d.reason = "operations_in_flight"
  elseif code == "busy" then
    d.holders, d.more_holders = holders, truncated or 0
  end
  error(kind(message or code or "the monitor refused", d))
end

--------------------------------------------------------------------------------------------
-- The mount table.

-- "\040" -> " ": the kernel escapes space, tab, newline and backslash in mountinfo.
local function unescape(s)
  return (s:gsub("\\([0-7][0-7][0-7])", function(o)
    return string.char(tonumber(o, 8) % 256)
  end))
end

-- Options whose value is a secret, in any file system's syntax.
local SECRET_KEYS = { secret = true, password = true, passwd = true, pass = true, key = true,
                      token = true }

local function add_options(out, seen, text)
  for _, opt in ipairs(agent.split(text, ",")) do
    local k = opt:match("^([^=]+)=")
    if k and SECRET_KEYS[k:lower()] then
      opt = k .. "=<hidden>"
    end
    if opt ~= "" and not seen[opt] then
      seen[opt] = true
      out[#out + 1] = opt
    end
  end
end

-- One mountinfo line as a table, or nil for a line that is not one.
-- 36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue
local function parse_line(line)
  local f = agent.split(line)
  local sep
  for i = 7, #f do
    if f[i] == "-" then
      sep = i
      break
    end
  end
  if not sep or #f < sep + 2 then
    return nil
  end
  local major, minor = f[3]:match("^(%d+):(%d+)$")
  if not major then
    return nil
  end
  local options, seen = {}, {}
  add_options(options, seen, f[6])
  add_options(options, seen, f[sep + 3] or "")
  local read_only = false
  for _, o in ipairs(agent.split(f[6], ",")) do
    if o == "ro" then
      read_only = true
    end
  end
  return {
    id = tonumber(f[1]),
    major = tonumber(major),
    minor = tonumber(minor),
    root = unescape(f[4]),
    mountpoint = unescape(f[5]),
    fstype = unescape(f[sep + 1]),
    source = unescape(f[sep + 2]),
    options = options,
    read_only = read_only,
  }
end

local function read_mountinfo()
  local text, err = agent.read_file("/proc/self/mountinfo", 4 * 1024 * 1024)
  if not text then
    error(errors.Unavailable("cannot read /proc/self/mountinfo: " .. tostring(err)))
  end
  local mounts = {}
  for line in agent.lines(text) do
    local m = parse_line(line)
    if m then
      mounts[#mounts + 1] = m
    end
  end
  return mounts
end

--------------------------------------------------------------------------------------------
-- Block devices.

-- Key=value lines (uevent, udev's "E:" lines, blkid's export) as a table.
local function key_values(text, prefix)
  local out = {}
  for line in agent.lines(text or "") do
    local k, v = line:match("^" .. (prefix or "") .. "([%w_]+)=(.*)$")
    if k then
      out[k] = v
    end
  end
  return out
end

local function read_or_nil(path, max)
  local text = agent.read_file(path, max or 65536)
  return text
end

-- What the kernel says of the block device major:minor: {kname, partition = N or nil,
-- disk = kname of the whole disk}, or nil when it is not a block device.
local function block_device(major, minor)
  local uevent = read_or_nil(("/sys/dev/block/%d:%d/uevent"):format(major, minor))
  if not uevent then
    return nil
  end
  local u = key_values(uevent)
  if not u.DEVNAME then
    return nil
  end
  local dev = { kname = u.DEVNAME, major = major, minor = minor, disk = u.DEVNAME }
  if u.DEVTYPE == "partition" then
    dev.partition = tonumber(u.PARTN)
    -- vdb1 -> vdb; nvme0n1p1 -> nvme0n1; mmcblk0p2 -> mmcblk0
    local base = u.DEVNAME:match("^(.-%d)p%d+$") or u.DEVNAME:match("^(.-)%d+$")
    if base and read_or_nil(("/sys/class/block/%s/%s/partition"):format(base, u.DEVNAME)) then
      dev.disk = base
    end
  end
  return dev
end

-- udev's properties of a device (E: lines of /run/udev/data/bM:m), {} without udev.
local function udev_properties(major, minor)
  return key_values(read_or_nil(("/run/udev/data/b%d:%d"):format(major, minor)), "E:")
end

-- The serial of a whole disk: udev's ID_SERIAL_SHORT, else the kernel's (virtio-blk).
local function disk_serial(disk)
  local dev_text = read_or_nil(("/sys/class/block/%s/dev"):format(disk))
  local major, minor = (dev_text or ""):match("^(%d+):(%d+)")
  if major then
    local p = udev_properties(tonumber(major), tonumber(minor))
    if p.ID_SERIAL_SHORT and p.ID_SERIAL_SHORT ~= "" then
      return p.ID_SERIAL_SHORT
    end
  end
  local serial = read_or_nil(("/sys/class/block/%s/serial"):format(disk))
  serial = serial and serial:match("^%s*(.-)%s*$")
  if serial and serial ~= "" then
    return serial
  end
  return nil
end

-- Every block device the kernel knows, from /proc/partitions: array of {major, minor, kname}.
local function all_block_devices()
  local text, err = agent.read_file("/proc/partitions")
  if not text then
    error(errors.Unavailable("cannot read /proc/partitions: " .. tostring(err)))
  end
  local out = {}
  for line in agent.lines(text) do
    local major, minor, name = line:match("^%s*(%d+)%s+(%d+)%s+%d+%s+(%S+)%s*$")
    if major then
      out[#out + 1] = { major = tonumber(major), minor = tonumber(minor), kname = name }
    end
  end
  return out
end

-- The whole disk (kname) that holds "/", or nil (a root on tmpfs, overlay, a container).
local function root_disk(mounts)
  for _, m in ipairs(mounts) do
    if m.mountpoint == "/" then
      local dev = block_device(m.major, m.minor)
      return dev and dev.disk
    end
  end
  return nil
end

--------------------------------------------------------------------------------------------
-- Volume names from the metadata service.

local function decode_name(text)
  local ok, v = pcall(json.decode, text)
  if ok and type(v) == "table" and type(v.name) == "string" and v.name ~= "" then
    return v.name
  end
  return nil
end

-- Volume id -> name from meta_data.json: device tags `exoVolume::{"name":...}` matched by the
-- device's serial (newer Exosphere), else metadata keys `exoVolumes::<volume uuid>` whose value
-- is `{"name":...}` (older). Returns an array of {id = full volume id, name =}, tags first.
local function names_of(meta_text)
  local ok, doc = pcall(json.decode, meta_text)
  local out = {}
  if not ok or type(doc) ~= "table" then
    return out
  end
  if type(doc.devices) == "table" then
    for _, d in ipairs(doc.devices) do
      if type(d) == "table" and type(d.serial) == "string" and type(d.tags) == "table" then
        for _, tag in ipairs(d.tags) do
          local rest = type(tag) == "string" and tag:match("^exoVolume::(.*)$")
          local name = rest and decode_name(rest)
          if name then
            out[#out + 1] = { id = d.serial, name = name }
          end
        end
      end
    end
  end
  if type(doc.meta) == "table" then
    local legacy = {}
    for k, v in pairs(doc.meta) do
      local id = type(k) == "string" and k:match("^exoVolumes::(.+)$")
      local name = id and type(v) == "string" and decode_name(v)
      if name then
        legacy[#legacy + 1] = { id = id, name = name }
      end
    end
    table.sort(legacy, function(a, b) return a.id < b.id end)
    for _, e in ipairs(legacy) do
      out[#out + 1] = e
    end
  end
  return out
end

-- The metadata's volume list, fetched once per call of a method (the runtime caches the
-- document itself). A metadata service that cannot be reached is no error: names fall back
-- to kernel names, as today's automount does.
local function metadata_volumes(ctx, state)
  if state.volumes == nil then
    local text, err = agent.metadata()
    if not text then
      ctx.log("debug", "no volume names from the metadata service: " .. tostring(err))
      state.volumes = {}
    else
      state.volumes = names_of(text)
    end
  end
  return state.volumes
end

-- The entry for a disk serial: equal, or the serial is the id cut short (virtio keeps 20
-- characters of the Cinder volume id).
local function find_volume(volumes, serial)
  if not serial then
    return nil
  end
  for _, v in ipairs(volumes) do
    if v.id == serial or (#serial >= 20 and v.id:sub(1, #serial) == serial) then
      return v
    end
  end
  return nil
end

--------------------------------------------------------------------------------------------
-- systemd.

-- systemd's path escaping (systemd-escape --path): "/media/volume/my data" ->
-- "media-volume-my\x20data".
local function escape_path(path)
  local p = path:gsub("/+", "/"):gsub("^/", ""):gsub("/$", "")
  if p == "" then
    return "-"
  end
  local out = {}
  for i = 1, #p do
    local c = p:sub(i, i)
    if c == "/" then
      out[i] = "-"
    elseif c:match("[%w:_]") or (c == "." and i > 1) then
      out[i] = c
    else
      out[i] = ("\\x%02x"):format(c:byte())
    end
  end
  return table.concat(out)
end

local function systemd_running()
  local comm = agent.read_file("/proc/1/comm")
  return comm ~= nil and comm:match("^systemd%s*$") ~= nil
end

--------------------------------------------------------------------------------------------
-- Mount objects.

local function under(path, prefix)
  return #path > #prefix + 1 and path:sub(1, #prefix + 1) == prefix .. "/"
    and not path:find("/", #prefix + 2, true)
end

local CEPH_TYPES = { ceph = true, ["fuse.ceph"] = true, ["fuse.ceph-fuse"] = true }

-- Facts shared by the mounts of one call: configuration, root disk, metadata, systemd.
local function new_state(ctx, mounts)
  return {
    ctx = ctx,
    config = agent.mounts.config(),
    root_disk = root_disk(mounts),
    systemd = systemd_running(),
  }
end

-- Probes of mounted volumes, kept while the mount table stays the same (its generation):
-- listing then costs the monitor one blkid per volume per change, not per call. A label
-- changed with e2label on a mounted file system shows at the next mount table change.
local probes = { generation = nil, by_device = {} }

local function cached_probe(devpath)
  local generation, watching = agent.mount_generation()
  if not watching then
    return agent.mounts.probe(devpath)
  end
  if probes.generation ~= generation then
    probes.generation, probes.by_device = generation, {}
  end
  local p = probes.by_device[devpath]
  if p == nil then
    p = agent.mounts.probe(devpath) or false
    probes.by_device[devpath] = p
  end
  return p or nil
end

local function usage(mountpoint)
  local fs = agent.statfs(mountpoint)
  if not fs then
    return json.null, json.null, json.null
  end
  local unit = fs.frsize or fs.bsize
  local used = (fs.blocks - fs.bfree) * unit
  return fs.blocks * unit, used, fs.bavail * unit
end

-- The Mount object of one mountinfo entry.
local function describe(state, m)
  local dev = m.major ~= 0 and block_device(m.major, m.minor) or nil
  local cfg = state.config
  local kind = "other"
  local serial
  if dev and dev.disk ~= state.root_disk then
    serial = disk_serial(dev.disk)
  end
  -- An attached disk mounted elsewhere counts as a volume too, but not a bind mount of one
  -- of its directories (mountinfo's root is then not "/"), which would list it twice.
  if under(m.mountpoint, cfg.volume_prefix) or (serial and m.root == "/" and m.mountpoint ~= "/") then
    kind = "volume"
  elseif under(m.mountpoint, cfg.share_prefix) or CEPH_TYPES[m.fstype] then
    kind = "share"
  end
  local label, uuid
  if dev then
    local p = udev_properties(m.major, m.minor)
    label, uuid = p.ID_FS_LABEL, p.ID_FS_UUID
    if not p.ID_FS_TYPE and kind == "volume" then
      -- No udev (a container) or udev has not seen it yet: ask the monitor to probe.
      local probe = cached_probe("/dev/" .. dev.kname)
      if probe then
        label, uuid = probe.LABEL, probe.UUID
      end
    end
  end
  local size, used, free = usage(m.mountpoint)
  local volume_name = json.null
  if kind == "volume" and dev then
    local v = find_volume(metadata_volumes(state.ctx, state), serial)
    volume_name = v and v.name or dev.kname
  end
  return {
    kind = kind,
    mountpoint = m.mountpoint,
    device = m.source,
    kernel_name = dev and dev.kname or json.null,
    fstype = m.fstype,
    label = (label and label ~= "") and label or json.null,
    uuid = (uuid and uuid ~= "") and uuid or json.null,
    options = m.options,
    read_only = m.read_only,
    size_bytes = size,
    used_bytes = used,
    free_bytes = free,
    unit = state.systemd and (escape_path(m.mountpoint) .. ".mount") or json.null,
    volume_id = (kind == "volume" and serial) or json.null,
    volume_name = volume_name,
  }
end

-- The Mount object of the mount at `mountpoint` (the topmost, when mounts are stacked).
local function mount_at(ctx, mountpoint)
  local mounts = read_mountinfo()
  local found
  for _, m in ipairs(mounts) do
    if m.mountpoint == mountpoint then
      found = m
    end
  end
  if not found then
    return nil
  end
  return describe(new_state(ctx, mounts), found)
end

--------------------------------------------------------------------------------------------
-- Finding the device of a request.

-- "/dev/vdb" or "vdb" -> the block device, or raises NotFound.
local function device_by_name(name)
  local kname = name:match("^/dev/([%w_.:+-]+)$") or name:match("^([%w_.:+-]+)$")
  for _, d in ipairs(kname and all_block_devices() or {}) do
    if d.kname == kname then
      return block_device(d.major, d.minor)
    end
  end
  fail(errors.NotFound, "not_found", ("no block device %s"):format(name), { device = name })
end

-- The whole disk whose serial is (a prefix of) volume_id, or raises NotFound.
local function device_by_volume_id(volume_id)
  for _, d in ipairs(all_block_devices()) do
    local dev = block_device(d.major, d.minor)
    if dev and not dev.partition then
      local serial = disk_serial(dev.kname)
      if serial and (serial == volume_id or (#serial >= 20 and volume_id:sub(1, #serial) == serial)) then
        return dev
      end
    end
  end
  fail(errors.NotFound, "not_found", ("no attached disk has volume id %s"):format(volume_id),
    { volume_id = volume_id })
end

local function partitions_of(kname)
  local out = {}
  for _, d in ipairs(all_block_devices()) do
    if d.kname ~= kname then
      local dev = block_device(d.major, d.minor)
      if dev and dev.partition and dev.disk == kname then
        out[#out + 1] = "/dev/" .. d.kname
      end
    end
  end
  return out
end

-- today's sanitize(): every run of non-word characters becomes "-"; then what the monitor
-- accepts as a directory name (no leading "." or "-", at most NAME_MAX bytes).
local function sanitize(name, fallback)
  local s = name:gsub("[^%w_]+", "-"):gsub("^[-.]+", ""):sub(1, NAME_MAX)
  if s == "" then
    return fallback
  end
  return s
end

local function is_mountpoint(mounts, path)
  for _, m in ipairs(mounts) do
    if m.mountpoint == path then
      return true
    end
  end
  return false
end

-- /media/volume/<name>, then <name>-<kernel name>, then <name>-1, -2, ...
local function free_mountpoint(mounts, prefix, name, kname)
  local candidates = { name, name .. "-" .. kname }
  for _, c in ipairs(candidates) do
    if not is_mountpoint(mounts, prefix .. "/" .. c) then
      return prefix .. "/" .. c
    end
  end
  for i = 1, MAX_COLLISIONS do
    local path = ("%s/%s-%d"):format(prefix, name, i)
    if not is_mountpoint(mounts, path) then
      return path
    end
  end
  fail(errors.AlreadyExists, "already_mounted", ("every name for %s is taken"):format(name))
end

local UUID_PATTERN = "^%x%x%x%x%x%x%x%x%-%x%x%x%x%-%x%x%x%x%-%x%x%x%x%-%x%x%x%x%x%x%x%x%x%x%x%x$"

--------------------------------------------------------------------------------------------
-- Methods.

local MOUNT_EXAMPLE = {
  kind = "volume",
  mountpoint = "/media/volume/data",
  device = "/dev/vdb",
  kernel_name = "vdb",
  fstype = "ext4",
  label = "data",
  uuid = "7d3c9b2e-41f5-4c7a-9a53-0b8e6f1d2c4a",
  options = { "rw", "relatime" },
  read_only = false,
  size_bytes = 10737418240,
  used_bytes = 1073741824,
  free_bytes = 9663676416,
  unit = "media-volume-data.mount",
  volume_id = "7d3c9b2e-41f5-4c7a-9",
  volume_name = "data",
}

local list = method({
  name = "mounts.list",
  summary = "List mounted file systems",
  description = "Every mount of the instance's mount table, with what Exosphere shows of a "
    .. "volume or share: its size and use, the volume's id and name, the systemd unit. No "
    .. "secret ever appears: secret-bearing options are shown as <hidden>.",
  since = "2026-12-01",
  stability = "stable",
  permission = "user",
  capabilities = { "system.read", "metadata.read", "mounts.read" },
  params = T.object({ kind = Kind:optional():describe("Only mounts of this kind") }),
  result = T.array(Mount),
  errors = { errors.Unavailable },
  examples = {
    { name = "the volumes", params = { kind = "volume" }, result = { MOUNT_EXAMPLE } },
  },
  handler = function(ctx, params)
    local mounts = read_mountinfo()
    local state = new_state(ctx, mounts)
    local out = {}
    for _, m in ipairs(mounts) do
      local d = describe(state, m)
      if params.kind == nil or params.kind == d.kind then
        out[#out + 1] = d
      end
    end
    return out
  end,
})

-- Added in API version 2027-01-15: clients of 2026-12-01 do not see it (api-versions/).
local get = method({
  name = "mounts.get",
  summary = "One mount, by its mountpoint",
  description = "The Mount object that mounts.list gives for this mountpoint (the topmost one "
    .. "when several are stacked), without listing every mount: what a client polls while it "
    .. "waits for one volume.",
  since = "2027-01-15",
  stability = "experimental",
  permission = "user",
  capabilities = { "system.read", "metadata.read", "mounts.read" },
  params = T.object({
    mountpoint = T.string({ min_len = 1, max_len = 4096, pattern = "^/" }):describe("An absolute path"),
  }),
  result = Mount,
  errors = { errors.NotFound, errors.Unavailable },
  examples = {
    { name = "a volume", params = { mountpoint = "/media/volume/data" }, result = MOUNT_EXAMPLE },
  },
  handler = function(ctx, params)
    local m = mount_at(ctx, params.mountpoint)
    if not m then
      fail(errors.NotFound, "not_mounted", params.mountpoint .. " is not a mountpoint",
        { mountpoint = params.mountpoint })
    end
    return m
  end,
})

-- The checks of mount_device that need no probe: the device exists, is not (on) the root
-- disk and is not mounted. Returns the device, the mount table, the state and /dev/<name>.
local function device_to_mount(ctx, params)
  if (params.device == nil) == (params.volume_id == nil) then
    error(errors.InvalidParams("params", "give exactly one of device and volume_id"))
  end
  local dev = params.device and device_by_name(params.device) or device_by_volume_id(params.volume_id)
  local mounts = read_mountinfo()
  local state = new_state(ctx, mounts)
  local devpath = "/dev/" .. dev.kname
  if dev.disk == state.root_disk then
    fail(errors.NotPermitted, "root_disk", devpath .. " is (on) the root disk", { device = devpath })
  end
  for _, m in ipairs(mounts) do
    if m.major == dev.major and m.minor == dev.minor then
      fail(errors.AlreadyExists, "already_mounted", ("%s is already mounted at %s"):format(devpath, m.mountpoint),
        { device = devpath, mountpoint = m.mountpoint })
    end
  end
  return dev, mounts, state, devpath
end

-- What is on the device (the monitor's probe); a partitioned disk is refused.
local function probe_device(dev, devpath)
  local probe, code, msg = agent.mounts.probe(devpath)
  if not probe then
    monitor_failed(code, msg)
  end
  if not dev.partition then
    local parts = partitions_of(dev.kname)
    if #parts > 0 or probe.PTTYPE then
      fail(errors.Unsupported, "partitioned", devpath .. " has a partition table: mount one of its partitions",
        { device = devpath, partitions = parts })
    end
  end
  if probe.TYPE and probe.USAGE ~= nil and probe.USAGE ~= "filesystem" then
    fail(errors.Unsupported, "not_a_file_system", ("%s holds %s, not a file system"):format(devpath, probe.TYPE),
      { device = devpath, type = probe.TYPE })
  end
  return probe
end

-- The mount's name: the volume's from the metadata service, or the disk's kernel name; and the
-- volume (or nil).
local function mount_name(ctx, state, dev)
  local serial = disk_serial(dev.disk)
  local v = find_volume(metadata_volumes(ctx, state), serial)
  local name = sanitize(v and v.name or dev.disk, dev.disk)
  if dev.partition then
    name = ("%s.part%d"):format(name, dev.partition)
  end
  return name, v, serial
end

-- mkfs.ext4 on a device without any signature, labelled with the volume's name and given its
-- id as the file system's UUID.
local function format_device(ctx, dev, devpath, v, serial)
  local full_id = v and v.id or serial
  local fs_uuid = full_id and full_id:match(UUID_PATTERN) and full_id:lower() or nil
  local label = (v and v.name or dev.kname):sub(1, 16):gsub("[^%w_.-]", "_")
  local ok, mcode, mmsg = agent.mounts.mkfs(devpath, label, fs_uuid)
  if not ok then
    monitor_failed(mcode, mmsg)
  end
  ctx.log("info", ("formatted %s as ext4"):format(devpath))
end

local function mount_named(ctx, state, mounts, dev, devpath, name, read_only)
  local mountpoint = free_mountpoint(mounts, state.config.volume_prefix, name, dev.kname)
  local ok, mcode, mmsg = agent.mounts.mount(devpath, mountpoint, read_only)
  if not ok then
    monitor_failed(mcode, mmsg)
  end
  local m = mount_at(ctx, mountpoint)
  if not m then
    fail(errors.Failed, "failed", ("%s was mounted at %s but is not there now"):format(devpath, mountpoint))
  end
  return m
end

-- The job of mount_device with format = true: probe, format when there is no signature at
-- all, mount. Not cancellable: mkfs cut in the middle would leave a half-made file system.
local function format_and_mount(ctx, params)
  local dev, _, _, devpath = device_to_mount(ctx, params)
  return { job_id = ctx.start_job({ summary = ("Format (if blank) and mount %s"):format(devpath), cancellable = false },
    function(job)
      job.progress(0, "probing", devpath)
      -- Read again in the job: the table may have changed since the call answered.
      local _, mounts, state = device_to_mount(ctx, params)
      local probe = probe_device(dev, devpath)
      local name, v, serial = mount_name(ctx, state, dev)
      if not probe.TYPE then
        job.progress(20, "formatting", devpath)
        format_device(ctx, dev, devpath, v, serial)
      end
      job.progress(80, "mounting", devpath)
      return mount_named(ctx, state, mounts, dev, devpath, name, params.read_only == true)
    end) }
end

local JobRef = T.object({ job_id = T.string() })
  :describe("With format: true, the job that formats and mounts (its result is the Mount)")

local mount_device = method({
  name = "mounts.mount_device",
  summary = "Mount an attached volume",
  description = "Mounts a disk or partition at /media/volume/<name>, where name is the "
    .. "volume's name from the metadata service (sanitised) or the kernel name, with "
    .. "\".part<N>\" for a partition and \"-<kernel name>\", \"-1\", ... when taken. A disk "
    .. "without any signature is formatted as ext4 only when format is true. With format: true "
    .. "the call answers at once with a job (phases probing, formatting, mounting) whose result "
    .. "is the Mount; without it, the call answers with the Mount. The mount is a "
    .. "transient systemd unit; the mountpoint belongs to the configured owner (exouser).",
  since = "2026-12-01",
  stability = "stable",
  permission = "user",
  idempotent = true,
  capabilities = { "system.read", "metadata.read", "mounts.read", "mounts.write" },
  params = T.object({
    device = T.string({ max_len = 255 }):optional():describe("/dev/vdb, or the kernel name"),
    volume_id = T.string({ min_len = 1, max_len = 64, pattern = "^[%w-]+$" }):optional()
      :describe("The Cinder volume id (or its first 20 characters)"),
    format = T.boolean():optional():describe("Format a disk that has no signature at all; makes the call a job"),
    read_only = T.boolean():optional():describe("Mount read-only"),
  }),
  result = T.one_of({ Mount, JobRef }),
  errors = { errors.NotFound, errors.AlreadyExists, errors.Unsupported, errors.NotPermitted,
             errors.Timeout, errors.Failed, errors.Busy },
  examples = {
    { name = "a formatted volume", params = { volume_id = "7d3c9b2e-41f5-4c7a-9a53-0b8e6f1d2c4a" },
      result = MOUNT_EXAMPLE },
    { name = "a new volume, formatted in a job",
      params = { volume_id = "7d3c9b2e-41f5-4c7a-9a53-0b8e6f1d2c4a", format = true, idempotency_key = "mount-7d3c9b2e" },
      result = { job_id = "3f2a0c9e7b5d41e8a6c4b2d0f1e3a5c7" } },
  },
  handler = function(ctx, params)
    if params.format == true then
      return format_and_mount(ctx, params)
    end
    local dev, mounts, state, devpath = device_to_mount(ctx, params)
    local probe = probe_device(dev, devpath)
    local name = mount_name(ctx, state, dev)
    if not probe.TYPE then
      fail(errors.Unsupported, "unformatted", devpath .. " has no file system; call again with format: true to make one",
        { device = devpath })
    end
    return mount_named(ctx, state, mounts, dev, devpath, name, params.read_only == true)
  end,
})

local unmount = method({
  name = "mounts.unmount",
  summary = "Unmount a volume or remove a share",
  description = "Stops the mount's systemd units (today's automount-volume@ units too) and "
    .. "unmounts it. A share's persistent unit and secret file are removed as well. When "
    .. "processes hold files on it, nothing is unmounted and the Busy error's data.holders "
    .. "says which (pid, command, user, fd or cwd/root/exe/mmap, path); lazy detaches it "
    .. "anyway.",
  since = "2026-12-01",
  stability = "stable",
  permission = "user",
  idempotent = true,
  capabilities = { "system.read", "metadata.read", "mounts.read", "mounts.write" },
  params = T.object({
    mountpoint = T.string({ max_len = 4096 }):optional(),
    device = T.string({ max_len = 255 }):optional(),
    volume_id = T.string({ min_len = 1, max_len = 64, pattern = "^[%w-]+$" }):optional(),
    lazy = T.boolean():optional():describe("Detach even when busy (umount -l)"),
  }),
  result = T.object({
    mountpoint = T.string(),
    stopped = T.array(T.string()):describe("systemd units stopped"),
    removed = T.array(T.string()):describe("What was removed: a share's unit and secret files, "
      .. "and the mountpoint once empty"),
  }),
  errors = { errors.NotFound, errors.Busy, errors.NotPermitted, errors.Timeout, errors.Failed },
  examples = {
    { name = "a volume", params = { mountpoint = "/media/volume/data" },
      result = { mountpoint = "/media/volume/data", stopped = { "media-volume-data.mount" },
                 removed = { "/media/volume/data" } } },
  },
  handler = function(ctx, params)
    local given = (params.mountpoint and 1 or 0) + (params.device and 1 or 0) + (params.volume_id and 1 or 0)
    if given ~= 1 then
      error(errors.InvalidParams("params", "give exactly one of mountpoint, device and volume_id"))
    end
    local mounts = read_mountinfo()
    local target
    if params.mountpoint then
      for _, m in ipairs(mounts) do
        if m.mountpoint == params.mountpoint then
          target = m.mountpoint
        end
      end
      if not target then
        fail(errors.NotFound, "not_mounted", params.mountpoint .. " is not a mountpoint",
          { mountpoint = params.mountpoint })
      end
    else
      local dev = params.device and device_by_name(params.device) or device_by_volume_id(params.volume_id)
      for _, m in ipairs(mounts) do
        if m.major == dev.major and m.minor == dev.minor then
          target = m.mountpoint
        end
      end
      if not target then
        fail(errors.NotFound, "not_mounted", ("/dev/%s is not mounted"):format(dev.kname), { device = "/dev/" .. dev.kname })
      end
    end
    local cfg = agent.mounts.config()
    if not (under(target, cfg.volume_prefix) or under(target, cfg.share_prefix)) then
      fail(errors.NotPermitted, "outside_prefixes", ("%s is not under %s or %s; the agent unmounts only its own mounts"):format(
        target, cfg.volume_prefix, cfg.share_prefix), { mountpoint = target })
    end
    local res, code, msg, holders, truncated = agent.mounts.unmount(target, params.lazy == true)
    if not res then
      monitor_failed(code, msg, holders, truncated)
    end
    return { mountpoint = target, stopped = res.stopped or {}, removed = res.removed or {} }
  end,
})

local mount_cephfs = method({
  name = "mounts.mount_cephfs",
  summary = "Mount a CephFS share (OpenStack Manila)",
  description = "Mounts the share at /media/share/<share_name> through a persistent systemd "
    .. "mount unit enabled for boot. The access key goes to a root-only (0600) file and "
    .. "never into the unit, a log line or an error. read_only mounts ro (for read-only access "
    .. "rules). The kernel client is used where the kernel has one, ceph-fuse otherwise.",
  since = "2026-12-01",
  stability = "stable",
  permission = "user",
  idempotent = true,
  capabilities = { "system.read", "metadata.read", "mounts.read", "mounts.write" },
  params = T.object({
    share_name = T.string({ min_len = 1, max_len = 200 }),
    export_path = T.string({ min_len = 3, max_len = 2048 })
      :describe("mon1:6789,mon2:6789:/volumes/_nogroup/<uuid>/<uuid>"),
    access_user = T.string({ min_len = 1, max_len = 64, pattern = "^[%w_.-]+$" })
      :describe("The cephx user of the access rule (without client.)"),
    access_key = T.string({ min_len = 1, max_len = 256, pattern = "^[%w+/=]+$" })
      :describe("The access rule's secret key"),
    read_only = T.boolean():optional(),
  }),
  result = Mount,
  errors = { errors.AlreadyExists, errors.NotPermitted, errors.Unavailable, errors.Unsupported,
             errors.Timeout, errors.Failed },
  examples = {
    {
      name = "a read-write share",
      params = { share_name = "results", export_path = "10.0.0.5:6789:/volumes/_nogroup/3f1a/9c2e",
                 access_user = "results-rw", access_key = "AQBbZ4Jm3q5RFhAAXq1mVxg0n8qD7Z3tR2m0kA==" },
      result = {
        kind = "share", mountpoint = "/media/share/results",
        device = "10.0.0.5:6789:/volumes/_nogroup/3f1a/9c2e", kernel_name = json.null, fstype = "ceph",
        label = json.null, uuid = json.null, options = { "rw", "noatime", "name=results-rw", "secret=<hidden>" },
        read_only = false, size_bytes = 107374182400, used_bytes = 0, free_bytes = 107374182400,
        unit = "media-share-results.mount", volume_id = json.null, volume_name = json.null,
      },
    },
  },
  handler = function(ctx, params)
    local cfg = agent.mounts.config()
    local name = sanitize(params.share_name, nil)
    if not name then
      error(errors.InvalidParams("params.share_name", "must contain a letter, digit or underscore"))
    end
    local mountpoint = cfg.share_prefix .. "/" .. name
    local mounts = read_mountinfo()
    if is_mountpoint(mounts, mountpoint) then
      fail(errors.AlreadyExists, "already_mounted", mountpoint .. " is already mounted", { mountpoint = mountpoint })
    end
    local res, code, msg = agent.mounts.cephfs_mount(mountpoint, params.export_path, params.access_user,
      params.access_key, params.read_only == true)
    if not res then
      monitor_failed(code, msg)
    end
    local m = mount_at(ctx, mountpoint)
    if not m then
      fail(errors.Failed, "failed", ("the share was mounted at %s but is not there now"):format(mountpoint))
    end
    return m
  end,
})

-- notify.mounts.*: the runtime runs mounts.list when the mount table changes (and only while
-- a session listens), compares it with the list before by mountpoint and sends what
-- differs, whoever made the change: a client, udev, or someone by hand.
local function mount_notification(verb, summary, description)
  return notification({
    name = "notify.mounts." .. verb,
    summary = summary,
    description = description,
    since = "2026-12-01",
    stability = "experimental",
    permission = "user",
    params = Mount,
    examples = { { name = "a volume", params = MOUNT_EXAMPLE } },
  })
end

local mounted = mount_notification("mounted", "A file system was mounted",
  "A mountpoint that mounts.list did not have before, as mounts.list now shows it.")
local unmounted = mount_notification("unmounted", "A file system was unmounted",
  "A mountpoint that mounts.list no longer has, as it was last seen.")
local changed = mount_notification("changed", "A mount changed",
  "A mountpoint still mounted whose device, file system type, options or read_only "
    .. "changed (a remount, or another file system mounted over it), as mounts.list now shows it.")

return { list, get, mount_device, unmount, mount_cephfs, mounted, unmounted, changed }
