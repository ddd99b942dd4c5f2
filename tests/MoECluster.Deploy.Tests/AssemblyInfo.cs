using System.Runtime.Versioning;

// The deployment targets Linux (bash, systemd, file modes); so do these checks.
[assembly: SupportedOSPlatform("linux")]
