namespace Engine.Onnx;

/// <summary>Paths as the file system resolves them: what a model folder, its external data and the CLI's files are checked with.</summary>
internal static class FilePaths
{
    /// <summary>Whether <paramref name="path"/> lies in <paramref name="folder"/> (both full paths).</summary>
    public static bool IsInside(string folder, string path)
    {
        string relative = Path.GetRelativePath(folder, path);
        return !Path.IsPathRooted(relative) && relative != ".." && !relative.StartsWith(".." + Path.DirectorySeparatorChar, StringComparison.Ordinal);
    }

    /// <summary>
    /// The full path of <paramref name="path"/> with every symbolic link in it resolved as the system resolves them ('..' after
    /// a link leaves the link's target). Only links that resolve are followed, so it ends where the system's lookup ends.
    /// </summary>
    public static string Real(string path)
    {
        char[] separators = [Path.DirectorySeparatorChar, Path.AltDirectorySeparatorChar];
        string fullPath = Path.GetFullPath(path);
        string root = Path.GetPathRoot(fullPath)!;
        var pending = new Stack<string>(fullPath[root.Length..].Split(separators, StringSplitOptions.RemoveEmptyEntries).Reverse());
        string real = root;
        while (pending.TryPop(out var segment))
        {
            if (segment == ".") continue;
            if (segment == "..")
            {
                real = Path.GetDirectoryName(real) ?? real;
                continue;
            }
            string next = Path.Join(real, segment);
            string? target = Path.Exists(next) ? new FileInfo(next).LinkTarget : null;
            if (target is null)
            {
                real = next;
                continue;
            }
            string targetRoot = Path.GetPathRoot(target) ?? "";
            if (targetRoot.Length > 0) real = targetRoot;
            foreach (var s in target[targetRoot.Length..].Split(separators, StringSplitOptions.RemoveEmptyEntries).Reverse()) pending.Push(s);
        }
        return real;
    }
}
