"""Access-control readers: OSDP (IEC 60839-11-5) over RS-485, as the controller ("CP")."""
