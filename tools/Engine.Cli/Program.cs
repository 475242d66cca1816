return Engine.Cli.Cli.Run(args, Console.Out, Console.Error);
