using BenchmarkDotNet.Running;

// Runs the suite: dotnet run -c Release --project benchmarks/Engine.Benchmarks -- --filter '*'
BenchmarkSwitcher.FromAssembly(typeof(Program).Assembly).Run(args);
