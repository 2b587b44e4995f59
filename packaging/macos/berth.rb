# Homebrew formula for Berth on macOS (Apple silicon and Intel), built from
# source with cargo. Not yet run on a Mac: see the README's macOS section.
#
# From a checkout of this repository:
#   brew install --HEAD --formula ./packaging/macos/berth.rb
#
# The guest (kernel `Image` and `initramfs.cpio`) is built on Linux by
# packaging/setup.sh; put the two files in dist/guest/ of the checkout
# before installing, or later into $(brew --prefix)/share/berth.
class Berth < Formula
  desc "Linux containers in a lightweight VM, driven by the docker CLI"
  # No homepage yet (`brew audit` asks for one): the project has no public address.
  license "Apache-2.0"
  head "file://#{File.expand_path("../..", __dir__)}", using: :git

  depends_on "protobuf" => :build
  depends_on "rust" => :build
  depends_on macos: :ventura

  def install
    system "cargo", "install", *std_cargo_args(path: "host")
    # Virtualization.framework refuses to create a VM without the entitlement;
    # the VM helper is the same binary (`berth vz-vmm`).
    system "codesign", "--force", "--sign", "-",
           "--entitlements", "packaging/macos/berth.entitlements", bin/"berth"
    guest = Pathname("dist/guest")
    # berth finds its guest in <prefix>/share/berth beside bin/berth.
    pkgshare.install Dir[guest/"*"] if guest.directory?
  end

  def caveats
    <<~EOS
      Berth's guest is built on Linux (packaging/setup.sh). If it was not in
      dist/guest/ when this was installed, copy Image and initramfs.cpio into
        #{opt_pkgshare}
      or point BERTH_ASSETS at their directory. Then:
        berth start && docker run --rm busybox uname -m
    EOS
  end

  test do
    assert_match "com.apple.security.virtualization",
                 shell_output("codesign --display --entitlements - #{bin}/berth 2>&1")
    assert_match "berth", shell_output("#{bin}/berth --help")
  end
end
