# Installs Berth for the current user from the unpacked zip this script is in
# (packaging/windows/make-zip.sh builds it): bin\berth.exe and share\berth\
# are copied to %LOCALAPPDATA%\Programs\Berth, whose bin\ is put on the
# user's PATH. No administrator rights: Berth runs its engine in a WSL 2
# distro of its own. Not yet run on Windows (see the README's Windows section).
#
#   powershell -ExecutionPolicy Bypass -File install.ps1 [-Uninstall]
param([switch]$Uninstall)
$ErrorActionPreference = 'Stop'

$target = Join-Path $env:LOCALAPPDATA 'Programs\Berth'
$bin = Join-Path $target 'bin'

function Set-UserPath([string[]]$entries) {
    [Environment]::SetEnvironmentVariable('Path', ($entries -join ';'), 'User')
}
$userPath = @([Environment]::GetEnvironmentVariable('Path', 'User') -split ';' | Where-Object { $_ })

if ($Uninstall) {
    if (Test-Path (Join-Path $bin 'berth.exe')) {
        & (Join-Path $bin 'berth.exe') stop
    }
    # The distro holds the engine's images and volumes: say how to remove it, do not do it.
    Write-Host "Berth's WSL distro (images, volumes) is kept; remove it with: wsl --unregister berth"
    Remove-Item -Recurse -Force $target -ErrorAction SilentlyContinue
    Set-UserPath ($userPath | Where-Object { $_ -ne $bin })
    Write-Host "Berth removed from $target"
    exit 0
}

# WSL 2 is what Berth runs on; `wsl --status` fails where it is missing.
& wsl.exe --status *> $null
if ($LASTEXITCODE -ne 0) {
    Write-Error "WSL is not installed: run 'wsl --install' (it may ask for a restart), then run this again."
}

$source = $PSScriptRoot
foreach ($needed in 'bin\berth.exe', 'share\berth\berth-wsl-rootfs.tar') {
    if (-not (Test-Path (Join-Path $source $needed))) {
        Write-Error "$needed is missing next to install.ps1: unpack the whole zip first."
    }
}
New-Item -ItemType Directory -Force -Path $target | Out-Null
Copy-Item -Recurse -Force (Join-Path $source 'bin'), (Join-Path $source 'share') $target

if ($userPath -notcontains $bin) {
    Set-UserPath ($userPath + $bin)
    Write-Host "Added $bin to your PATH (open a new terminal to use it)."
}
if (-not (Get-Command docker.exe -ErrorAction SilentlyContinue)) {
    Write-Host "Berth serves the docker CLI, which was not found: winget install Docker.DockerCLI"
}
Write-Host "Installed Berth in $target. Next: berth start; docker run --rm busybox uname -a"
