using var interruption = Engine.Cli.Interruption.OnSignals();
return Engine.Cli.Cli.Run(args, Console.Out, Console.Error, interruption);
