local setup = require("tests.lua.helpers.setup")
local kit = require("tests.lua.helpers.kit")

local json = setup.json

-- A fake machine: a root disk vda (vda1 on /), an attached volume vdb, a partitioned volume
-- vdc (vdc1 with ext4, vdc2 blank), and the files the kernel and udev would show for them.
local VDB_ID = "7d3c9b2e-41f5-4c7a-9a53-0b8e6f1d2c4a"
local VDC_ID = "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"

local function machine(k)
  local c = k.core
  c.files["/proc/1/comm"] = "systemd\n"
  c.files["/proc/partitions"] = table.concat({
    "major minor  #blocks  name", "",
    " 254        0   20971520 vda",
    " 254        1   20970496 vda1",
    " 254       16   10485760 vdb",
    " 254       32   10485760 vdc",
    " 254       33    5241856 vdc1",
    " 254       34    5241856 vdc2",
    "",
  }, "\n")
  local function blk(kname, major, minor, partn)
    local uevent = ("MAJOR=%d\nMINOR=%d\nDEVNAME=%s\nDEVTYPE=%s\n"):format(major, minor, kname,
      partn and "partition" or "disk")
    if partn then
      uevent = uevent .. ("PARTN=%d\n"):format(partn)
    end
    c.files[("/sys/dev/block/%d:%d/uevent"):format(major, minor)] = uevent
    c.files[("/sys/class/block/%s/dev"):format(kname)] = ("%d:%d\n"):format(major, minor)
  end
  blk("vda", 254, 0)
  blk("vda1", 254, 1, 1)
  c.files["/sys/class/block/vda/vda1/partition"] = "1\n"
  blk("vdb", 254, 16)
  c.files["/sys/class/block/vdb/serial"] = VDB_ID:sub(1, 20)
  blk("vdc", 254, 32)
  blk("vdc1", 254, 33, 1)
  blk("vdc2", 254, 34, 2)
  c.files["/sys/class/block/vdc/vdc1/partition"] = "1\n"
  c.files["/sys/class/block/vdc/vdc2/partition"] = "2\n"
  c.files["/run/udev/data/b254:32"] = "E:ID_SERIAL_SHORT=" .. VDC_ID:sub(1, 20) .. "\nE:ID_PART_TABLE_TYPE=gpt\n"
  c.files["/run/udev/data/b254:33"] = "E:ID_FS_TYPE=ext4\nE:ID_FS_LABEL=results\nE:ID_FS_UUID=11111111-2222-4333-8444-555555555555\n"
  c.files["/proc/self/mountinfo"] = table.concat({
    "22 1 254:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw,discard,errors=remount-ro",
    "23 22 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw",
    "95 22 254:16 / /media/volume/my\\040data rw,relatime shared:50 - ext4 /dev/vdb rw",
    "96 22 0:55 / /media/share/results rw,noatime shared:51 - ceph 10.0.0.5:6789:/volumes/_nogroup/3f1a/9c2e rw,name=results-rw,secret=<hidden>,acl",
    "",
  }, "\n")
  c.statfs_results["/"] = { bsize = 4096, frsize = 4096, blocks = 1000, bfree = 400, bavail = 300, files = 1, ffree = 1 }
  c.statfs_results["/media/volume/my data"] = { bsize = 4096, frsize = 4096, blocks = 2621440, bfree = 2359296,
                                                bavail = 2359296, files = 1, ffree = 1 }
  c.probes["/dev/vdb"] = { TYPE = "ext4", USAGE = "filesystem", LABEL = "my_data", UUID = VDB_ID }
  c.metadata_body = json.encode({
    uuid = "instance-uuid",
    meta = { ["exoVolumes::" .. VDC_ID] = json.encode({ name = "old results" }), other = "x" },
    devices = {
      { type = "nic", bus = "pci", mac = "fa:16:3e:00:00:01", tags = { "x" } },
      { type = "disk", bus = "virtio", serial = VDB_ID, path = "/dev/vdb",
        tags = { 'exoVolume::{"name":"my data"}' } },
    },
  })
end

local function by_mountpoint(list)
  local out = {}
  for _, m in ipairs(list) do
    out[m.mountpoint] = m
  end
  return out
end

describe("mounts.list", function()
  local k

  before_each(function()
    k = kit.new({ files = { "methods/mounts.lua" } })
    machine(k)
  end)

  after_each(setup.restore_string_metatable)

  it("describes every mount, decoding mountinfo's escapes", function()
    local ok, list = k:rpc("mounts.list", {})
    assert.is_true(ok, json.encode(list))
    local m = by_mountpoint(list)
    assert.equal(4, #list)
    assert.same({
      kind = "volume", mountpoint = "/media/volume/my data", device = "/dev/vdb", kernel_name = "vdb",
      fstype = "ext4", label = "my_data", uuid = VDB_ID, options = { "rw", "relatime" }, read_only = false,
      size_bytes = 2621440 * 4096, used_bytes = 262144 * 4096, free_bytes = 2359296 * 4096,
      unit = "media-volume-my\\x20data.mount", volume_id = VDB_ID:sub(1, 20), volume_name = "my data",
    }, m["/media/volume/my data"])
    assert.equal("other", m["/"].kind)
    assert.equal(json.null, m["/"].volume_id)
    assert.equal("other", m["/proc"].kind)
    assert.equal(json.null, m["/proc"].kernel_name)
  end)

  it("never shows a secret, and marks CephFS mounts as shares", function()
    local ok, list = k:rpc("mounts.list", { kind = "share" })
    assert.is_true(ok)
    assert.equal(1, #list)
    assert.equal("share", list[1].kind)
    assert.same({ "rw", "noatime", "name=results-rw", "secret=<hidden>", "acl" }, list[1].options)
    assert.equal(json.null, list[1].size_bytes) -- statfs fails in the fake: null, not an error
  end)

  it("hides the value of any secret-bearing option", function()
    k.core.files["/proc/self/mountinfo"] = "30 22 0:60 / /mnt/x rw - cifs //srv/x rw,password=hunter2,user=bob\n"
    local ok, list = k:rpc("mounts.list", {})
    assert.is_true(ok)
    assert.same({ "rw", "password=<hidden>", "user=bob" }, list[1].options)
    assert.is_nil(json.encode(list):find("hunter2", 1, true))
  end)

  it("counts an attached disk mounted elsewhere as a volume, but not a bind mount of its directories", function()
    k.core.files["/proc/self/mountinfo"] = table.concat({
      "22 1 254:1 / / rw - ext4 /dev/vda1 rw",
      "95 22 254:16 / /srv/data rw - ext4 /dev/vdb rw",
      "96 22 254:16 /projects /home/exouser/projects rw - ext4 /dev/vdb rw",
      "",
    }, "\n")
    local ok, list = k:rpc("mounts.list", {})
    assert.is_true(ok)
    local m = by_mountpoint(list)
    assert.equal("volume", m["/srv/data"].kind)
    assert.equal("my data", m["/srv/data"].volume_name)
    assert.equal("other", m["/home/exouser/projects"].kind)
  end)

  it("filters by kind", function()
    local ok, list = k:rpc("mounts.list", { kind = "volume" })
    assert.is_true(ok)
    assert.equal(1, #list)
    assert.equal("/media/volume/my data", list[1].mountpoint)
  end)

  it("asks the monitor for a volume's label without udev, once per mount table generation", function()
    k.core.files["/run/udev/data/b254:16"] = nil
    k.core.probes["/dev/vdb"] = { TYPE = "ext4", USAGE = "filesystem", LABEL = "probed", UUID = VDB_ID }
    local function probes()
      local n = 0
      for _, c in ipairs(k.core.monitor_calls) do
        n = n + (c[1] == "probe" and 1 or 0)
      end
      return n
    end
    local ok, list = k:rpc("mounts.list", { kind = "volume" })
    assert.is_true(ok)
    assert.equal("probed", list[1].label)
    assert.equal(1, probes())
    k:rpc("mounts.list", { kind = "volume" })
    assert.equal(1, probes())
    k.core.generation = k.core.generation + 1
    k:rpc("mounts.list", { kind = "volume" })
    assert.equal(2, probes())
  end)

  it("falls back to the kernel name without a metadata service", function()
    k.core.metadata_body, k.core.metadata_error = nil, "metadata service unreachable: connection refused"
    local ok, list = k:rpc("mounts.list", { kind = "volume" })
    assert.is_true(ok)
    assert.equal("vdb", list[1].volume_name)
  end)

  it("reports no unit without systemd", function()
    k.core.files["/proc/1/comm"] = "process_api\n"
    local ok, list = k:rpc("mounts.list", { kind = "volume" })
    assert.is_true(ok)
    assert.equal(json.null, list[1].unit)
  end)

  it("fails clearly when the mount table cannot be read", function()
    k.core.files["/proc/self/mountinfo"] = nil
    local ok, err = k:rpc("mounts.list", {})
    assert.is_false(ok)
    assert.equal(-32009, err.code)
    assert.matches("cannot read /proc/self/mountinfo", err.message, 1, true)
  end)

  it("refuses an unknown kind", function()
    local ok, err = k:rpc("mounts.list", { kind = "disk" })
    assert.is_false(ok)
    assert.equal(-32602, err.code)
  end)
end)

describe("mounts.get", function()
  local k

  before_each(function()
    k = kit.new({ files = { "methods/mounts.lua" } })
    machine(k)
  end)

  after_each(setup.restore_string_metatable)

  it("answers the Mount that mounts.list gives for one mountpoint", function()
    local list = by_mountpoint(select(2, k:rpc("mounts.list", {})))
    for _, mp in ipairs({ "/media/volume/my data", "/media/share/results", "/" }) do
      local ok, m = k:rpc("mounts.get", { mountpoint = mp })
      assert.is_true(ok, json.encode(m))
      assert.same(list[mp], m, mp)
    end
  end)

  it("answers NotFound with a reason for a path where nothing is mounted", function()
    local ok, err = k:rpc("mounts.get", { mountpoint = "/media/volume/none" })
    assert.same({ false, -32003, "not_mounted", "/media/volume/none" },
      { ok, err.code, err.data.reason, err.data.mountpoint })
  end)

  it("takes an absolute path only, and does not exist for API version 2026-12-01", function()
    for _, mp in ipairs({ "media/volume/x", "", ("/" .. ("a"):rep(4096)) }) do
      local ok, err = k:rpc("mounts.get", { mountpoint = mp })
      assert.same({ false, -32602, "params.mountpoint" }, { ok, err.code, err.data.path }, mp)
    end
    local ok, err = k:rpc("mounts.get", { mountpoint = "/" }, { api_version = "2026-12-01" })
    assert.same({ false, -32601, "not_in_api_version" }, { ok, err.code, err.data.reason })
  end)
end)

describe("mounts.mount_device", function()
  local k

  before_each(function()
    k = kit.new({ files = { "methods/mounts.lua" } })
    machine(k)
    -- vdb is not mounted in these tests
    k.core.files["/proc/self/mountinfo"] = "22 1 254:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw\n"
    k.core.mount_answer = function(device, mountpoint, read_only)
      k.core.files["/proc/self/mountinfo"] = k.core.files["/proc/self/mountinfo"]
        .. ("97 22 %s / %s %s shared:60 - ext4 %s rw\n"):format(
          device == "/dev/vdb" and "254:16" or "254:33", mountpoint:gsub(" ", "\\040"), read_only and "ro" or "rw", device)
      return { unit = "x.mount" }
    end
  end)

  after_each(setup.restore_string_metatable)

  local function calls(op)
    local out = {}
    for _, c in ipairs(k.core.monitor_calls) do
      if c[1] == op then
        out[#out + 1] = c
      end
    end
    return out
  end

  it("mounts a formatted volume under its sanitised metadata name", function()
    local ok, m = k:rpc("mounts.mount_device", { volume_id = VDB_ID })
    assert.is_true(ok, json.encode(m))
    assert.equal("/media/volume/my-data", m.mountpoint)
    assert.equal("volume", m.kind)
    assert.same({ { "mount", "/dev/vdb", "/media/volume/my-data", false } }, calls("mount"))
    assert.same({}, calls("mkfs"))
  end)

  it("finds the disk by its 20-character virtio serial or by device", function()
    local ok, m = k:rpc("mounts.mount_device", { device = "/dev/vdb", read_only = true })
    assert.is_true(ok, json.encode(m))
    assert.is_true(m.read_only)
    assert.same({ "mount", "/dev/vdb", "/media/volume/my-data", true }, calls("mount")[1])
  end)

  it("appends the kernel name, then -1, -2 on a collision", function()
    k.core.files["/proc/self/mountinfo"] = table.concat({
      "22 1 254:1 / / rw - ext4 /dev/vda1 rw",
      "40 22 0:40 / /media/volume/my-data rw - tmpfs tmpfs rw",
      "41 22 0:41 / /media/volume/my-data-vdb rw - tmpfs tmpfs rw",
      "42 22 0:42 / /media/volume/my-data-1 rw - tmpfs tmpfs rw",
      "",
    }, "\n")
    local ok, m = k:rpc("mounts.mount_device", { device = "vdb" })
    assert.is_true(ok, json.encode(m))
    assert.equal("/media/volume/my-data-2", m.mountpoint)
  end)

  it("refuses to format unless asked, then formats with the volume's name and id", function()
    k.core.probes["/dev/vdb"] = {}
    local ok, err = k:rpc("mounts.mount_device", { device = "/dev/vdb" })
    assert.is_false(ok)
    assert.equal(-32008, err.code)
    assert.equal("unformatted", err.data.reason)
    assert.same({}, calls("mkfs"))
    assert.same({}, calls("mount"))

    k.core.mkfs_answer = function() return true end
    local started
    ok, started = k:rpc("mounts.mount_device", { device = "/dev/vdb", format = true }, { session = 5 })
    assert.is_true(ok, json.encode(started))
    assert.same({}, calls("mkfs")) -- the call answered with the job; the job formats
    assert.equal(32, #started.job_id)
    assert.equal(1, k:run_jobs())
    assert.same({ { "mkfs", "/dev/vdb", "my_data", VDB_ID } }, calls("mkfs"))
    local r = k:call_ok("jobs.get", { job_id = started.job_id })
    assert.equal("succeeded", r.state, json.encode(r))
    assert.equal("/media/volume/my-data", r.result.mountpoint)
    assert.is_false(r.cancellable)
    local phases = {}
    for _, text in ipairs(k.core.sent[5]) do
      local n = json.decode(text)
      if n.method == "notify.jobs.progress" then
        phases[#phases + 1] = n.params.progress.phase
      end
    end
    assert.same({ "probing", "formatting", "mounting" }, phases)
  end)

  it("with format: true on a formatted disk, mounts it in the job without formatting", function()
    local ok, started = k:rpc("mounts.mount_device", { device = "/dev/vdb", format = true })
    assert.is_true(ok, json.encode(started))
    k:run_jobs()
    local r = k:call_ok("jobs.get", { job_id = started.job_id })
    assert.equal("succeeded", r.state, json.encode(r))
    assert.same({}, calls("mkfs"))
  end)

  it("with format: true, checks the device before answering and fails the job on the monitor's refusal", function()
    local ok, err = k:rpc("mounts.mount_device", { device = "/dev/vda", format = true })
    assert.is_false(ok)
    assert.equal("root_disk", err.data.reason)
    k.core.probes["/dev/vdb"] = {}
    k.core.mkfs_answer = function() return nil, "failed", "mkfs.ext4 failed" end
    local started
    ok, started = k:rpc("mounts.mount_device", { device = "/dev/vdb", format = true })
    assert.is_true(ok)
    k:run_jobs()
    local r = k:call_ok("jobs.get", { job_id = started.job_id })
    assert.same({ "failed", "mkfs.ext4 failed" }, { r.state, r.error.message })
    assert.same({}, calls("mount"))
  end)

  it("answers a repeat with the same idempotency_key without mounting twice", function()
    local ok, a = k:rpc("mounts.mount_device", { device = "/dev/vdb", idempotency_key = "m1" })
    assert.is_true(ok, json.encode(a))
    local ok2, b = k:rpc("mounts.mount_device", { device = "/dev/vdb", idempotency_key = "m1" })
    assert.is_true(ok2, json.encode(b))
    assert.same(a, b)
    assert.equal(1, #calls("mount"))
  end)

  it("refuses a partitioned disk, naming its partitions", function()
    k.core.probes["/dev/vdc"] = { PTTYPE = "gpt" }
    local ok, err = k:rpc("mounts.mount_device", { device = "/dev/vdc" })
    assert.is_false(ok)
    assert.equal("partitioned", err.data.reason)
    assert.same({ "/dev/vdc1", "/dev/vdc2" }, err.data.partitions)
  end)

  it("mounts a partition as <volume name>.part<N>, with the legacy metadata key's name", function()
    k.core.probes["/dev/vdc1"] = { TYPE = "ext4", USAGE = "filesystem" }
    local ok, m = k:rpc("mounts.mount_device", { device = "/dev/vdc1" })
    assert.is_true(ok, json.encode(m))
    assert.equal("/media/volume/old-results.part1", m.mountpoint)
  end)

  it("refuses the root disk and its partitions", function()
    for _, dev in ipairs({ "/dev/vda", "/dev/vda1" }) do
      local ok, err = k:rpc("mounts.mount_device", { device = dev })
      assert.is_false(ok)
      assert.equal("root_disk", err.data.reason)
    end
    assert.same({}, k.core.monitor_calls)
  end)

  it("says where a device is already mounted", function()
    k.core.files["/proc/self/mountinfo"] = "95 22 254:16 / /srv/x rw - ext4 /dev/vdb rw\n"
    local ok, err = k:rpc("mounts.mount_device", { device = "/dev/vdb" })
    assert.is_false(ok)
    assert.equal(-32006, err.code)
    assert.same({ reason = "already_mounted", device = "/dev/vdb", mountpoint = "/srv/x" }, err.data)
  end)

  it("refuses a device that holds something other than a file system", function()
    k.core.probes["/dev/vdb"] = { TYPE = "swap", USAGE = "other" }
    local ok, err = k:rpc("mounts.mount_device", { device = "/dev/vdb" })
    assert.is_false(ok)
    assert.equal("not_a_file_system", err.data.reason)
  end)

  it("needs exactly one of device and volume_id", function()
    for _, p in ipairs({ {}, { device = "/dev/vdb", volume_id = VDB_ID } }) do
      local ok, err = k:rpc("mounts.mount_device", p)
      assert.is_false(ok)
      assert.equal(-32602, err.code)
    end
  end)

  it("answers NotFound for a device or volume that is not there", function()
    local ok, err = k:rpc("mounts.mount_device", { device = "/dev/vdz" })
    assert.is_false(ok)
    assert.equal(-32003, err.code)
    ok, err = k:rpc("mounts.mount_device", { volume_id = "ffffffff-ffff" })
    assert.is_false(ok)
    assert.equal(-32003, err.code)
    assert.equal("not_found", err.data.reason)
  end)

  it("passes the monitor's refusal on with a stable reason", function()
    k.core.mount_answer = function() return nil, "timeout", "systemd-mount took longer than 60 s" end
    local ok, err = k:rpc("mounts.mount_device", { device = "/dev/vdb" })
    assert.is_false(ok)
    assert.equal(-32004, err.code)
    assert.equal("timeout", err.data.reason)
    assert.equal("systemd-mount took longer than 60 s", err.message)
  end)
end)

describe("mounts.unmount", function()
  local k

  before_each(function()
    k = kit.new({ files = { "methods/mounts.lua" } })
    machine(k)
  end)

  after_each(setup.restore_string_metatable)

  it("unmounts by mountpoint, device or volume id", function()
    k.core.unmount_answer = function(mp) return { stopped = { "x.mount" }, removed = {} } end
    for _, p in ipairs({ { mountpoint = "/media/volume/my data" }, { device = "/dev/vdb" }, { volume_id = VDB_ID } }) do
      local ok, r = k:rpc("mounts.unmount", p)
      assert.is_true(ok, json.encode(r))
      assert.same({ mountpoint = "/media/volume/my data", stopped = { "x.mount" }, removed = {} }, r)
    end
    assert.same({ "unmount", "/media/volume/my data", false }, k.core.monitor_calls[1])
  end)

  it("lists the holders of a busy mount", function()
    local holders = { { pid = 4242, command = "bash", user = "exouser", uid = 1000, use = "cwd", path = "/media/volume/my data" },
                      { pid = 4243, command = "python3", user = "exouser", uid = 1000, use = "fd", fd = 3,
                        path = "/media/volume/my data/results.csv" } }
    k.core.unmount_answer = function() return nil, "busy", "2 processes use /media/volume/my data", holders, 3 end
    local ok, err = k:rpc("mounts.unmount", { mountpoint = "/media/volume/my data" })
    assert.is_false(ok)
    assert.equal(-32005, err.code)
    assert.equal("busy", err.data.reason)
    assert.same(holders, err.data.holders)
    assert.equal(3, err.data.more_holders)
  end)

  it("tells a monitor with every slot taken from a busy mount", function()
    k.core.unmount_answer = function() return nil, "busy", "4 mount operations are running ([mounts] max_in_flight)" end
    local ok, err = k:rpc("mounts.unmount", { mountpoint = "/media/volume/my data" })
    assert.is_false(ok)
    assert.equal(-32005, err.code)
    assert.equal("operations_in_flight", err.data.reason)
    assert.is_nil(err.data.holders)
  end)

  it("passes lazy on", function()
    k.core.unmount_answer = function() return { stopped = {}, removed = {} } end
    assert.is_true((k:rpc("mounts.unmount", { mountpoint = "/media/share/results", lazy = true })))
    assert.same({ "unmount", "/media/share/results", true }, k.core.monitor_calls[1])
  end)

  it("refuses what is not mounted and what is outside the agent's prefixes", function()
    local ok, err = k:rpc("mounts.unmount", { mountpoint = "/media/volume/nothing" })
    assert.is_false(ok)
    assert.equal("not_mounted", err.data.reason)
    ok, err = k:rpc("mounts.unmount", { mountpoint = "/" })
    assert.is_false(ok)
    assert.equal(-32002, err.code)
    assert.equal("outside_prefixes", err.data.reason)
    assert.same({}, k.core.monitor_calls)
  end)
end)

describe("mounts.mount_cephfs", function()
  local k
  local KEY = "AQBbZ4Jm3q5RFhAAXq1mVxg0n8qD7Z3tR2m0kA=="
  local EXPORT = "10.0.0.5:6789:/volumes/_nogroup/3f1a/9c2e"

  before_each(function()
    k = kit.new({ files = { "methods/mounts.lua" } })
    machine(k)
    k.core.files["/proc/self/mountinfo"] = "22 1 254:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw\n"
  end)

  after_each(setup.restore_string_metatable)

  it("mounts under /media/share/<sanitised name> and never echoes the key", function()
    k.core.cephfs_answer = function(mp, export, user, key, ro)
      k.core.files["/proc/self/mountinfo"] = k.core.files["/proc/self/mountinfo"]
        .. ("96 22 0:55 / %s %s,noatime - ceph %s rw,name=%s,secret=<hidden>\n"):format(mp, ro and "ro" or "rw", export, user)
      return { unit = "media-share-my_results.mount", client = "kernel", secret_file = "/var/lib/x" }
    end
    local ok, m = k:rpc("mounts.mount_cephfs", { share_name = "my results", export_path = EXPORT,
                                                 access_user = "results-ro", access_key = KEY, read_only = true })
    assert.is_true(ok, json.encode(m))
    assert.equal("/media/share/my-results", m.mountpoint)
    assert.equal("share", m.kind)
    assert.is_true(m.read_only)
    assert.same({ "cephfs_mount", "/media/share/my-results", EXPORT, "results-ro", KEY, true }, k.core.monitor_calls[1])
    assert.is_nil(json.encode(m):find(KEY, 1, true))
  end)

  it("maps the monitor's failures to stable reasons without the key", function()
    for code, rpc_code in pairs({ permission_denied = -32002, unreachable = -32009, timeout = -32004, no_client = -32008 }) do
      k.core.cephfs_answer = function() return nil, code, "mount failed: " .. code end
      local ok, err = k:rpc("mounts.mount_cephfs", { share_name = "r", export_path = EXPORT, access_user = "r-rw",
                                                     access_key = KEY })
      assert.is_false(ok)
      assert.equal(rpc_code, err.code)
      assert.equal(code, err.data.reason)
      assert.is_nil(json.encode(err):find(KEY, 1, true))
    end
  end)

  it("answers invalid params when the binding refuses an export path", function()
    k.core.cephfs_answer = function() return nil, "invalid", "export_path: the monitors must be host:port" end
    local ok, err = k:rpc("mounts.mount_cephfs", { share_name = "r", export_path = "nonsense:/x", access_user = "r-rw",
                                                   access_key = KEY })
    assert.is_false(ok)
    assert.equal(-32602, err.code)
    assert.equal("export_path: the monitors must be host:port", err.data.reason)
  end)

  it("refuses a key that is not base64 before anything happens", function()
    local ok, err = k:rpc("mounts.mount_cephfs", { share_name = "r", export_path = EXPORT, access_user = "r-rw",
                                                   access_key = "AQB;rm -rf /" })
    assert.is_false(ok)
    assert.equal(-32602, err.code)
    assert.same({}, k.core.monitor_calls)
  end)

  it("refuses a share already mounted", function()
    k.core.files["/proc/self/mountinfo"] = "96 22 0:55 / /media/share/r rw - ceph x:/y rw\n"
    local ok, err = k:rpc("mounts.mount_cephfs", { share_name = "r", export_path = EXPORT, access_user = "r-rw",
                                                   access_key = KEY })
    assert.is_false(ok)
    assert.equal("already_mounted", err.data.reason)
  end)
end)

describe("notify.mounts.*", function()
  local k

  before_each(function()
    k = kit.new({ files = { "methods/mounts.lua" } })
    machine(k)
  end)

  after_each(setup.restore_string_metatable)

  -- What the runtime does when the mount table changes: mounts.list as the agent, then the
  -- host's diff (runtime/events.c).
  local function mount_table_changed()
    k.core.generation = k.core.generation + 1
    return k.host.mounts_update(k:call_ok("mounts.list", {}))
  end

  it("are declared with the Mount object of mounts.list as params", function()
    local doc = k.host.discover()
    local list_item
    for _, m in ipairs(doc.methods) do
      if m.name == "mounts.list" then
        list_item = m.result.schema.items
      end
    end
    local names = {}
    for _, n in ipairs(doc["x-notifications"]) do
      -- notify.jobs.* are the host's own.
      if n.name:find("^notify%.mounts%.") then
        names[#names + 1] = n.name
        assert.same(list_item, n.params, n.name)
      end
    end
    assert.same({ "notify.mounts.changed", "notify.mounts.mounted", "notify.mounts.unmounted" }, names)
  end)

  it("tell a subscriber what changed between two mount tables, whoever changed them", function()
    k:call_ok("notifications.subscribe", { names = { "notify.mounts.mounted", "notify.mounts.unmounted",
      "notify.mounts.changed" } }, { session = 5 })
    assert.equal(1, k.core.snapshots)
    assert.equal(0, mount_table_changed()) -- the baseline the runtime takes for a first subscriber
    -- By hand: the volume unmounted, the share remounted read-only, the partition mounted.
    k.core.files["/proc/self/mountinfo"] = table.concat({
      "22 1 254:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw,discard,errors=remount-ro",
      "23 22 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw",
      "96 22 0:55 / /media/share/results ro,noatime shared:51 - ceph 10.0.0.5:6789:/volumes/_nogroup/3f1a/9c2e rw,name=results-rw,secret=<hidden>,acl",
      "97 22 254:33 / /media/volume/old\\040results.part1 rw,relatime shared:52 - ext4 /dev/vdc1 rw",
      "",
    }, "\n")
    assert.equal(3, mount_table_changed())
    local got = {}
    for i, text in ipairs(k.core.sent[5]) do
      local v = json.decode(text)
      got[i] = { v.method, v.params.mountpoint, v.params.read_only }
      assert.is_true(k.host.check_result("mounts.list", { v.params }), text)
    end
    assert.same({
      { "notify.mounts.unmounted", "/media/volume/my data", false },
      { "notify.mounts.changed", "/media/share/results", true },
      { "notify.mounts.mounted", "/media/volume/old results.part1", false },
    }, got)
    assert.matches('"volume_name":"my data"', k.core.sent[5][1], 1, true)
    assert.matches('"volume_name":"old results"', k.core.sent[5][3], 1, true)
    assert.equal(0, mount_table_changed()) -- nothing changed since
  end)
end)
